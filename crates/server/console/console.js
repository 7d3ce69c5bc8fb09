// agentauth console: a small single-page front end over the admin API,
// served by the server itself. No framework, no build step, nothing from
// elsewhere. Every text from the server is set as text, never as HTML.
//
// The session lives in an HttpOnly cookie; the CSRF secret that writes
// carry is kept in this module's memory only (nothing in localStorage).

const API = "/console/api/v1/realms";
const CSRF_HEADER = "x-agentauth-csrf";
/** The most clients the list loads. */
const MAX_LISTED = 5000;
const HOOKS = ["dcr", "may-act", "token", "scope", "authorize", "assertion"];

let session = null;

// ---- DOM helpers --------------------------------------------------------

/** An element with attributes (`on*` become listeners) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const main = () => document.getElementById("main");

function show(title, ...content) {
  document.title = `${title} · agentauth console`;
  const m = main();
  m.replaceChildren(h("h1", {}, title), ...content);
  m.focus({ preventScroll: true });
}

/** Tells the user how an action went, in the live region. */
function say(text, kind = "ok") {
  document.getElementById("status").replaceChildren(h("p", { class: `message ${kind}` }, text));
}
function clearStatus() {
  document.getElementById("status").replaceChildren();
}

function when(seconds) {
  if (!seconds) return "—";
  return new Date(seconds * 1000)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, " UTC");
}

/** "1 client", "2 clients". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function badge(state) {
  return h("span", { class: `state state-${String(state).replace(/[^a-z]/g, "")}` }, state);
}

function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "muted" }, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          headers.map((name) => h("th", { scope: "col" }, name)),
        ),
      ),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length }, "None."))),
    ),
  );
}

/** Asks before a destructive action, in a modal dialog. */
function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, question),
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "yes", class: "danger" }, confirmLabel),
        h("button", { value: "no", class: "secondary", autofocus: true }, "Cancel"),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// ---- the API ------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error_description || body?.error || `HTTP ${status}`);
    this.status = status;
  }
}

async function request(method, url, body, contentType = "application/json") {
  const headers = {};
  if (session && method !== "GET") headers[CSRF_HEADER] = session.csrf;
  if (body !== undefined) headers["content-type"] = contentType;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : contentType === "application/json" ? JSON.stringify(body) : body,
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error_description: text };
  }
  if (response.status === 401 && url !== "/console/api/session") {
    session = null;
    route();
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

const api = (method, path, body, contentType) => request(method, `${API}${path}`, body, contentType);
const seg = encodeURIComponent;

/** Runs an action, reporting its failure (or success) in the live region. */
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) say(typeof done === "function" ? done(result) : done);
    return result;
  } catch (e) {
    say(e.message, "error");
    return undefined;
  }
}

// ---- routing ------------------------------------------------------------

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function renderChrome(realm, section) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session) {
    nav.hidden = who.hidden = true;
    return;
  }
  const links = [];
  if (session.principal === "operator") links.push(["#/realms", "Realms", section === "realms"]);
  if (realm) {
    for (const [key, label] of [
      ["clients", "Agents and clients"],
      ["plugins", "Plugins"],
      ["keys", "Keys"],
      ["audit", "Audit"],
      ["settings", "Settings"],
    ]) {
      links.push([`#/realms/${seg(realm)}/${key}`, label, section === key]);
    }
  }
  nav.replaceChildren(
    ...links.map(([href, label, current]) => h("a", { href, "aria-current": current ? "page" : null }, label)),
  );
  nav.hidden = false;
  const name = session.principal === "operator" ? "Operator" : `${session.name} (admin of ${session.realm})`;
  who.replaceChildren(
    h("span", {}, realm ? `${name} · realm ${realm}` : name),
    h("button", { type: "button", onclick: signOut }, "Sign out"),
  );
  who.hidden = false;
}

async function route() {
  clearStatus();
  if (!session) {
    try {
      session = await request("GET", "/console/api/session");
    } catch {
      session = null;
    }
  }
  if (!session) {
    renderChrome();
    return signInPage();
  }
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch {
    parts = [];
  }
  if (parts[0] !== "realms" || (parts.length === 1 && session.principal !== "operator") || !parts[0]) {
    return navigate(session.principal === "operator" ? "#/realms" : `#/realms/${seg(session.realm)}/clients`);
  }
  const [, realm, section = "clients", ...rest] = parts;
  renderChrome(realm, realm ? section : "realms");
  if (!realm) return realmsPage();
  const pages = {
    clients: clientsPage,
    client: clientPage,
    plugins: pluginsPage,
    keys: keysPage,
    audit: auditPage,
    settings: settingsPage,
  };
  const page = pages[section];
  if (!page) return show("Not found", h("p", {}, "There is no such page."));
  try {
    await page(realm, ...rest);
  } catch (e) {
    show("Something went wrong", h("p", { class: "message error" }, e.message));
  }
}

// ---- signing in -----------------------------------------------------------

function signInPage() {
  const token = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true });
  const error = h("p", { id: "sign-in-error", class: "message error", role: "alert", hidden: true });
  const form = h(
    "form",
    {
      class: "card narrow",
      "aria-describedby": "sign-in-help",
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        try {
          session = await request("POST", "/console/api/session", { token: token.value });
          token.value = "";
          navigate(session.principal === "operator" ? "#/realms" : `#/realms/${seg(session.realm)}/clients`);
        } catch (e) {
          error.textContent = e.status === 401 ? "That token is not an admin token of this server." : e.message;
          error.hidden = false;
          token.focus();
        }
      },
    },
    h(
      "p",
      { id: "sign-in-help", class: "muted" },
      "Sign in with the operator's admin token, or a realm admin's token. The token is exchanged for a session cookie and not kept by the browser.",
    ),
    h("label", { for: "token" }, "Admin token"),
    token,
    error,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
  );
  show("Sign in", form);
  token.focus();
}

async function signOut() {
  await attempt(() => request("DELETE", "/console/api/session"));
  session = null;
  navigate("#/");
}

// ---- realms ---------------------------------------------------------------

async function realmsPage() {
  const { realms } = await api("GET", "");
  const name = h("input", { type: "text", id: "new-realm", required: true, pattern: "[A-Za-z0-9_-]{1,64}" });
  const settings = h("textarea", { id: "new-realm-settings", class: "short", rows: 4 }, "{}");
  const rows = realms.map((realm) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/realms/${seg(realm)}/clients` }, realm)),
      h(
        "td",
        {},
        h(
          "div",
          { class: "actions" },
          h("a", { href: `#/realms/${seg(realm)}/settings` }, "Settings"),
          h("button", { type: "button", class: "danger", onclick: () => deleteRealm(realm) }, "Delete"),
        ),
      ),
    ),
  );
  show(
    "Realms",
    table(count(realms.length, "realm"), ["Realm", "Actions"], rows),
    h(
      "form",
      {
        class: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          let body;
          try {
            body = JSON.parse(settings.value || "{}");
          } catch (e) {
            return say(`The settings are not JSON: ${e.message}`, "error");
          }
          const created = await attempt(() => api("PUT", `/${seg(name.value)}`, body), `Realm ${name.value} created.`);
          if (created) realmsPage().then(() => say(`Realm ${created.name} created.`));
        },
      },
      h("h2", {}, "Create a realm"),
      h("label", { for: "new-realm" }, "Name"),
      name,
      h("label", { for: "new-realm-settings" }, "Settings (JSON; empty for the defaults)"),
      settings,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Create realm")),
    ),
  );
}

async function deleteRealm(realm) {
  if (
    !(await confirmAction(
      `Delete realm ${realm}, with its clients, users, tokens, plugins and keys?`,
      `Delete ${realm}`,
    ))
  )
    return;
  if ((await attempt(() => api("DELETE", `/${seg(realm)}`))) === undefined) return;
  await realmsPage();
  say(`Realm ${realm} deleted.`);
}

// ---- agents and clients ---------------------------------------------------

async function clientsPage(realm) {
  const search = h("input", { type: "search", id: "client-search", placeholder: "name, id or owner" });
  const state = h(
    "select",
    { id: "client-state" },
    ["any", "active", "disabled", "expired"].map((s) => h("option", { value: s }, s)),
  );
  const agents = h("input", { type: "checkbox", id: "agents-only" });
  const holder = h("div", {});
  let clients = [];
  let more = false;
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = clients.filter(
      (c) =>
        !needle ||
        [c.client_id, c.client_name, c.attributes?.owner].some((v) => v && String(v).toLowerCase().includes(needle)),
    );
    holder.replaceChildren(
      table(
        `${shown.length} of ${count(clients.length, "client")}${more ? ` (the first ${MAX_LISTED}; filter by state or kind to see others)` : ""}`,
        ["Name", "Client id", "Kind", "Owner", "Created", "Last used", "Live tokens", "State", "Actions"],
        shown.map((c) =>
          h(
            "tr",
            {},
            h(
              "td",
              {},
              h("a", { href: `#/realms/${seg(realm)}/client/${seg(c.client_id)}` }, c.client_name || "(unnamed)"),
            ),
            h("td", {}, h("code", {}, c.client_id)),
            h("td", {}, c.is_ai_agent ? "agent" : "client"),
            h("td", {}, c.attributes?.owner || "—"),
            h("td", {}, when(c.client_id_issued_at)),
            h("td", {}, when(c.last_used_at)),
            h("td", {}, String(c.live_tokens ?? 0)),
            h("td", {}, badge(c.state)),
            h("td", {}, clientActions(realm, c, load)),
          ),
        ),
      ),
    );
  };
  const load = async () => {
    const query = new URLSearchParams();
    if (state.value !== "any") query.set("state", state.value);
    if (agents.checked) query.set("agents", "true");
    clients = [];
    let after = null;
    do {
      if (after) query.set("after", after);
      const page = await api("GET", `/${seg(realm)}/clients?${query}`);
      clients.push(...page.clients);
      after = page.next;
    } while (after && clients.length < MAX_LISTED);
    more = Boolean(after);
    render();
  };
  search.addEventListener("input", render);
  state.addEventListener("change", () => attempt(load));
  agents.addEventListener("change", () => attempt(load));
  show(
    "Agents and clients",
    h(
      "div",
      { class: "card inline", role: "search" },
      h("div", {}, h("label", { for: "client-search" }, "Search"), search),
      h("div", {}, h("label", { for: "client-state" }, "State"), state),
      h("div", {}, h("label", { for: "agents-only" }, "Agents only"), agents),
    ),
    holder,
  );
  await load();
}

function clientActions(realm, client, reload) {
  const id = client.client_id;
  const path = `/${seg(realm)}/clients/${seg(id)}`;
  const name = client.client_name || id;
  const buttons = [];
  if (client.state === "disabled") {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: async () => {
            if (await attempt(() => api("POST", `${path}/enable`), `${name} enabled; its earlier tokens stay dead.`))
              reload();
          },
        },
        "Enable",
      ),
    );
  } else {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: async () => {
            if (!(await confirmAction(`Disable ${name}? Every token it holds stops working at once.`, "Disable")))
              return;
            if (await attempt(() => api("POST", `${path}/disable`), `${name} disabled; its tokens are inactive.`))
              reload();
          },
        },
        "Disable",
      ),
    );
  }
  buttons.push(
    h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          if (!(await confirmAction(`Delete ${name}, its tokens and the consents given to it?`, "Delete"))) return;
          if ((await attempt(() => api("DELETE", path), `${name} deleted.`)) !== undefined) reload();
        },
      },
      "Delete",
    ),
  );
  return h("div", { class: "actions" }, buttons);
}

async function clientPage(realm, clientId) {
  const load = async () => {
    const client = await api("GET", `/${seg(realm)}/clients/${seg(clientId)}`);
    const facts = [
      ["Client id", client.client_id],
      ["Name", client.client_name || "—"],
      ["Kind", client.is_ai_agent ? "AI agent" : "client"],
      ["Owner", client.attributes?.owner || "—"],
      ["State", badge(client.state)],
      ["Created", when(client.client_id_issued_at)],
      ["Expires", client.client_secret_expires_at ? when(client.client_secret_expires_at) : "never"],
      ["Last used", when(client.last_used_at)],
      ["Live tokens", `${client.live_tokens ?? 0} server-side (opaque, refresh, and JWTs of token families)`],
      ["Grant types", (client.grant_types || []).join(", ") || "—"],
      ["Scope", client.scope || "—"],
    ];
    show(
      client.client_name || client.client_id,
      h("p", {}, h("a", { href: `#/realms/${seg(realm)}/clients` }, "← All clients")),
      h(
        "div",
        { class: "card" },
        h(
          "dl",
          { class: "facts" },
          facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
      ),
      clientActions(realm, client, load),
      h("h2", {}, "Registration"),
      h("pre", { class: "card mono" }, JSON.stringify(client, null, 2)),
    );
  };
  await load();
}

// ---- plugins ----------------------------------------------------------------

/** A sample test case for a plugin of `hook` (see `agentauth plugin test`). */
const SAMPLE_CASES = {
  dcr: {
    operation: "create",
    client: {
      client_id: "agent-1",
      metadata: { client_name: "helper", grant_types: ["client_credentials"], scope: "read" },
    },
  },
  "may-act": { client: { client_id: "agent-1" }, token: { grant_type: "client_credentials", scopes: ["read"] } },
  token: { client: { client_id: "agent-1" }, token: { grant_type: "client_credentials" } },
  scope: { scope_request: { grant_type: "client_credentials", requested: ["read", "write"] } },
  authorize: { user: { username: "ada" }, authorization_request: { scopes: ["read"], consented: false } },
  assertion: {
    assertion: {
      purpose: "login",
      issuer: "https://idp.example.com",
      claims: { sub: "248289761001", email: "ada@example.com" },
    },
  },
};

/** What a version's calls on this replica came to. */
function callStats(stats) {
  if (!stats) return "—";
  const mean = stats.calls ? ` · ${((stats.seconds / stats.calls) * 1000).toFixed(2)} ms mean` : "";
  const failures = Object.entries(stats.failures)
    .map(([cause, n]) => `${n} ${cause}`)
    .join(", ");
  return `${count(stats.calls, "call")}${mean}${failures ? ` · failed: ${failures}` : ""}`;
}

async function pluginsPage(realm) {
  const [{ plugins }, hooks] = await Promise.all([
    api("GET", `/${seg(realm)}/plugins`),
    api("GET", `/${seg(realm)}/hooks`),
  ]);
  const byName = new Map();
  for (const p of plugins) {
    if (!byName.has(p.name)) byName.set(p.name, []);
    byName.get(p.name).push(p);
  }
  const reload = (message) => pluginsPage(realm).then(() => say(message));
  const path = (name, rest = "") => `/${seg(realm)}/plugins/${seg(name)}${rest}`;
  const versionRow = (name, v) =>
    h(
      "tr",
      {},
      h("td", {}, String(v.version)),
      h("td", {}, v.active ? badge("active") : "—"),
      h("td", {}, h("code", {}, v.sha256)),
      h("td", {}, `${Math.round(v.size / 1024)} KiB`),
      h("td", {}, v.language || "—"),
      h("td", {}, when(v.created_at), h("br"), h("span", { class: "muted" }, v.uploaded_by || "")),
      h("td", {}, callStats(v.stats)),
      h(
        "td",
        {},
        h(
          "div",
          { class: "actions" },
          !v.active &&
            h(
              "button",
              {
                type: "button",
                onclick: async () => {
                  const done = await attempt(() => api("POST", path(name, "/activate"), { version: v.version }));
                  if (done) reload(`${name}: version ${v.version} active.`);
                },
              },
              `Activate v${v.version}`,
            ),
          !v.active &&
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: async () => {
                  if (!(await confirmAction(`Delete version ${v.version} of ${name}?`, "Delete version"))) return;
                  const done = await attempt(() => api("DELETE", path(name, `/versions/${v.version}`)));
                  if (done) reload(`${name}: version ${v.version} deleted.`);
                },
              },
              "Delete",
            ),
        ),
      ),
    );
  const sections = [...byName].map(([name, versions]) => {
    const id = `plugin-${name}`;
    return h(
      "section",
      { class: "card", "aria-labelledby": id },
      h("h2", { id }, `${name} `, h("span", { class: "muted" }, `(${versions[0].hook} hook)`)),
      h(
        "div",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: async () => {
              const done = await attempt(() => api("POST", path(name, "/rollback")));
              if (done) reload(`${name}: version ${done.version} active again.`);
            },
          },
          "Roll back",
        ),
      ),
      table(
        `Versions of ${name}; calls as this server counted them since the version was loaded`,
        ["Version", "Active", "sha256", "Size", "Language", "Uploaded", "Calls", "Actions"],
        versions.map((v) => versionRow(name, v)),
      ),
      testPanel(name, versions, path),
    );
  });
  const selected = Object.entries(hooks).map(([hook, plugin]) =>
    h("tr", {}, h("th", { scope: "row" }, hook), h("td", {}, plugin ? String(plugin) : "—")),
  );
  show(
    "Plugins",
    uploadForm(realm, [...byName.keys()]),
    h("h2", {}, "The realm's hooks"),
    h(
      "div",
      { class: "table-wrap" },
      h("table", {}, h("caption", { class: "muted" }, "Which plugin each hook runs"), h("tbody", {}, selected)),
    ),
    ...sections,
  );
}

/** Runs a version of plugin `name` on a test case, before activating it. */
function testPanel(name, versions, path) {
  const key = name.replace(/[^a-z0-9-]/gi, "");
  const version = h(
    "select",
    { id: `test-version-${key}` },
    versions.map((v) => h("option", { value: v.version }, `v${v.version}${v.active ? " (active)" : ""}`)),
  );
  version.value = String(Math.max(...versions.map((v) => v.version)));
  const sample = SAMPLE_CASES[versions[0].hook] || {};
  const caseText = h(
    "textarea",
    { id: `test-case-${key}`, class: "short", spellcheck: "false", rows: 6 },
    JSON.stringify(sample, null, 2),
  );
  const result = h("pre", { class: "mono", role: "status", "aria-label": `Test result of ${name}` });
  return h(
    "details",
    {},
    h("summary", {}, `Test a version of ${name} on a case`),
    h(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          let testCase;
          try {
            testCase = JSON.parse(caseText.value || "{}");
          } catch (e) {
            result.textContent = `The case is not JSON: ${e.message}`;
            return;
          }
          try {
            const answer = await api("POST", path(name, `/versions/${version.value}/test`), testCase);
            const verdict = answer.allowed ? "Allowed" : answer.denied !== undefined ? "Denied" : "Failed";
            result.textContent = `${verdict}\n${JSON.stringify(answer, null, 2)}`;
          } catch (e) {
            result.textContent = `Not run: ${e.message}`;
          }
        },
      },
      h("div", { class: "inline" }, h("div", {}, h("label", { for: version.id }, "Version"), version)),
      h("label", { for: caseText.id }, "Test case (JSON; see agentauth plugin test)"),
      caseText,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Run test")),
      result,
    ),
  );
}

function uploadForm(realm, names) {
  const file = h("input", { type: "file", id: "plugin-file", accept: ".wasm,application/wasm", required: true });
  const name = h("input", {
    type: "text",
    id: "plugin-name",
    required: true,
    list: "plugin-names",
    pattern: "[a-z0-9][a-z0-9-]{0,63}",
  });
  const hook = h(
    "select",
    { id: "plugin-hook" },
    h("option", { value: "" }, "the one it exports"),
    HOOKS.map((k) => h("option", { value: k }, k)),
  );
  const activate = h("input", { type: "checkbox", id: "plugin-activate", checked: true });
  const drop = h("div", { class: "drop", id: "plugin-drop" }, "Drop a WebAssembly component here, or choose a file.");
  const result = h("div", { role: "status" });
  const pick = (f) => {
    if (!f) return;
    drop.textContent = `${f.name} (${Math.round(f.size / 1024)} KiB)`;
    if (!name.value)
      name.value = f.name
        .replace(/\.wasm$/, "")
        .replace(/_/g, "-")
        .toLowerCase();
  };
  let dropped = null;
  file.addEventListener("change", () => {
    dropped = null;
    pick(file.files[0]);
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    dropped = e.dataTransfer.files[0] || null;
    pick(dropped);
  });
  return h(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const component = dropped || file.files[0];
        if (!component) return say("Choose a component to upload.", "error");
        const query = new URLSearchParams({ activate: String(activate.checked) });
        if (hook.value) query.set("hook", hook.value);
        try {
          const pushed = await api(
            "POST",
            `/${seg(realm)}/plugins/${seg(name.value)}?${query}`,
            await component.arrayBuffer(),
            "application/wasm",
          );
          await pluginsPage(realm);
          say(
            `Accepted: ${pushed.name} version ${pushed.version}${activate.checked ? ", active" : ""} (sha256 ${pushed.sha256}).`,
          );
        } catch (e) {
          result.replaceChildren(h("p", { class: "message error", role: "alert" }, `Refused: ${e.message}`));
        }
      },
    },
    h("h2", {}, "Upload a version"),
    drop,
    h("label", { for: "plugin-file" }, "Component (.wasm)"),
    file,
    h(
      "div",
      { class: "inline" },
      h("div", {}, h("label", { for: "plugin-name" }, "Plugin name"), name),
      h("div", {}, h("label", { for: "plugin-hook" }, "Hook"), hook),
      h("div", {}, h("label", { for: "plugin-activate" }, "Activate it"), activate),
    ),
    h(
      "datalist",
      { id: "plugin-names" },
      names.map((n) => h("option", { value: n })),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Upload")),
    result,
  );
}

// ---- keys -------------------------------------------------------------------

async function keysPage(realm) {
  const { keys } = await api("GET", `/${seg(realm)}/keys`);
  const alg = h(
    "select",
    { id: "rotate-alg" },
    h("option", { value: "" }, "the realm's algorithm"),
    ["ES256", "RS256", "EdDSA"].map((a) => h("option", { value: a }, a)),
  );
  show(
    "Signing keys",
    table(
      count(keys.length, "key"),
      ["Algorithm", "Status", "Created", "Signs from", "Retires"],
      keys.map((k) =>
        h(
          "tr",
          {},
          h("td", {}, k.alg),
          h("td", {}, badge(k.status)),
          h("td", {}, when(k.created_at)),
          h("td", {}, when(k.signs_from)),
          h("td", {}, when(k.retires_at)),
        ),
      ),
    ),
    h(
      "form",
      {
        class: "card inline",
        onsubmit: async (event) => {
          event.preventDefault();
          if (!(await confirmAction("Rotate the realm's signing key now?", "Rotate"))) return;
          const rotated = await attempt(() =>
            api("POST", `/${seg(realm)}/keys/rotate`, alg.value ? { alg: alg.value } : {}),
          );
          if (rotated)
            keysPage(realm).then(() => say(`A new ${rotated.alg} key signs from ${when(rotated.signs_from)}.`));
        },
      },
      h("div", {}, h("label", { for: "rotate-alg" }, "New key's algorithm"), alg),
      h("button", { type: "submit" }, "Rotate now"),
    ),
  );
}

// ---- audit ------------------------------------------------------------------

async function auditPage(realm) {
  const field = (id, label, attrs = {}) => {
    const input = h("input", { type: "text", id, name: id, ...attrs });
    return [input, h("div", {}, h("label", { for: id }, label), input)];
  };
  const [client, clientField] = field("audit-client", "Client id");
  const [plugin, pluginField] = field("audit-plugin", "Plugin");
  const [version, versionField] = field("audit-version", "Version", { inputmode: "numeric", pattern: "[0-9]*" });
  const outcome = h(
    "select",
    { id: "audit-outcome" },
    ["", "allowed", "refused"].map((o) => h("option", { value: o }, o || "any")),
  );
  const since = h("input", { type: "datetime-local", id: "audit-since" });
  const decisions = h("div", {});
  const PAGE = 200;
  const decisionRow = (d) =>
    h(
      "tr",
      {},
      h("td", {}, when(d.at)),
      h("td", {}, d.event),
      h("td", {}, h("code", {}, d.client_id || "—")),
      h("td", {}, d.grant_type || "—"),
      h("td", {}, badge(d.outcome)),
      h("td", {}, d.plugins.map((p) => `${p.name} v${p.version} (${p.outcome})`).join(", ") || "—"),
      h("td", {}, d.error || ""),
    );
  // Decisions come oldest first, a page at a time: "more" asks for the
  // page after the last one shown.
  let shown = [];
  const load = async (after) => {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (client.value) query.set("client_id", client.value.trim());
    if (plugin.value) query.set("plugin", plugin.value.trim());
    if (version.value) query.set("version", version.value.trim());
    if (outcome.value) query.set("outcome", outcome.value);
    if (since.value) query.set("since", String(Math.floor(new Date(since.value).getTime() / 1000)));
    if (after) query.set("after", String(after));
    const found = await api("GET", `/${seg(realm)}/decisions?${query}`);
    shown = after ? shown.concat(found.decisions) : found.decisions;
    const more =
      found.decisions.length === PAGE &&
      h(
        "button",
        { type: "button", class: "secondary", onclick: () => attempt(() => load(found.next)) },
        "More decisions",
      );
    decisions.replaceChildren(
      table(
        `${count(shown.length, "decision")}, oldest first`,
        ["At", "Event", "Client", "Grant", "Outcome", "Plugins (version)", "Error"],
        shown.map(decisionRow),
      ),
      more || "",
    );
  };
  const changes = h("div", {});
  let entries = [];
  const loadChanges = async (after) => {
    const page = await api("GET", `/${seg(realm)}/audit${after ? `?after=${after}` : ""}`);
    entries = after ? entries.concat(page.entries) : page.entries;
    const last = page.entries.length === 1000 && page.entries[page.entries.length - 1].id;
    changes.replaceChildren(
      table(
        count(entries.length, "change"),
        ["At", "Actor", "Action", "Plugin", "Version", "Detail"],
        entries.map((e) =>
          h(
            "tr",
            {},
            h("td", {}, when(e.at)),
            h("td", {}, e.actor),
            h("td", {}, e.action),
            h("td", {}, e.plugin || "—"),
            h("td", {}, e.version ?? "—"),
            h("td", {}, h("code", {}, e.detail || "")),
          ),
        ),
      ),
      last
        ? h(
            "button",
            { type: "button", class: "secondary", onclick: () => attempt(() => loadChanges(last)) },
            "More changes",
          )
        : "",
    );
  };
  show(
    "Audit",
    h(
      "form",
      {
        class: "card inline",
        role: "search",
        onsubmit: (event) => {
          event.preventDefault();
          attempt(() => load());
        },
      },
      clientField,
      pluginField,
      versionField,
      h("div", {}, h("label", { for: "audit-outcome" }, "Outcome"), outcome),
      h("div", {}, h("label", { for: "audit-since" }, "Since"), since),
      h("button", { type: "submit" }, "Filter"),
    ),
    h("h2", {}, "Token and registration decisions"),
    decisions,
    h("h2", {}, "Administrative changes"),
    changes,
  );
  await Promise.all([load(), loadChanges()]);
}

// ---- settings ---------------------------------------------------------------

async function settingsPage(realm) {
  const { settings } = await api("GET", `/${seg(realm)}`);
  const editor = h(
    "textarea",
    { id: "settings", spellcheck: "false", "aria-describedby": "settings-help" },
    JSON.stringify(settings, null, 2),
  );
  const result = h("div", { role: "status" });
  show(
    `Settings of ${realm}`,
    h(
      "form",
      {
        class: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          let edited;
          try {
            edited = JSON.parse(editor.value);
          } catch (e) {
            return result.replaceChildren(h("p", { class: "message error", role: "alert" }, `Not JSON: ${e.message}`));
          }
          // Only what changed is sent: a realm admin may not send the
          // settings only the operator may change, even unchanged.
          const changes = {};
          for (const [key, value] of Object.entries(edited)) {
            if (JSON.stringify(value) !== JSON.stringify(settings[key])) changes[key] = value;
          }
          // A setting taken out of the editor is unset (the server says
          // so if it cannot be).
          for (const key of Object.keys(settings)) {
            if (!(key in edited)) changes[key] = null;
          }
          if (!Object.keys(changes).length)
            return result.replaceChildren(h("p", { class: "message ok" }, "Nothing changed."));
          try {
            await api("PATCH", `/${seg(realm)}`, changes);
            await settingsPage(realm);
            say(`Saved: ${Object.keys(changes).join(", ")}.`);
          } catch (e) {
            result.replaceChildren(h("p", { class: "message error", role: "alert" }, `Not saved: ${e.message}`));
          }
        },
      },
      h("label", { for: "settings" }, "Realm settings (JSON)"),
      h(
        "p",
        { id: "settings-help", class: "muted" },
        "The server checks every value; a refused change says why and changes nothing.",
      ),
      editor,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save settings")),
      result,
    ),
  );
}

window.addEventListener("hashchange", route);
route();
