// Builds each policy in this folder into a component:
//   node build.mjs OUT_DIR  ->  OUT_DIR/js-<plugin>.wasm
//
// The `http` and `fetch-event` features are disabled: left on, the
// component imports wasi:http, which agentauth refuses.

import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const here = fileURLToPath(new URL(".", import.meta.url));
const wit = join(here, "..", "..", "wit");
const out = process.argv[2] ?? join(here, "..", "..", "target", "polyglot");

const plugins = [
  { dir: "software-agent-dcr", world: "dcr-hook" },
  { dir: "software-agent-may-act", world: "may-act-hook" },
  { dir: "agent-for-user", world: "authorize-hook" },
  { dir: "trusted-domains-assertion", world: "assertion-hook" },
];

await mkdir(out, { recursive: true });
for (const { dir, world } of plugins) {
  const { component } = await componentize({
    sourcePath: join(here, dir, "index.js"),
    witPath: wit,
    worldName: world,
    disableFeatures: ["http", "fetch-event", "stdio", "random", "clocks"],
  });
  const path = join(out, `js-${dir}.wasm`);
  await writeFile(path, component);
  console.log(`built ${path} (${component.length} bytes)`);
}
