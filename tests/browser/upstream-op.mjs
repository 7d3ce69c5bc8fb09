// An upstream OpenID provider for the upstream-login tests: panva's
// oidc-provider on loopback, with one client (agentauth's realm) and one
// user. Its built-in login and consent pages (devInteractions) accept any
// password for a known login; the user is `alice`, whose email is
// alice@example.com, verified.
//
//   PORT=0 CLIENT_ID=... CLIENT_SECRET=... REDIRECT_URI=... node upstream-op.mjs
//
// prints `issuer <url>` once it listens, and runs until killed.
import http from 'node:http';
import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const users = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example', groups: ['staff'] },
};

const server = http.createServer();
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: env('CLIENT_ID'),
      client_secret: env('CLIENT_SECRET'),
      redirect_uris: [env('REDIRECT_URI')],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups'],
    // The claims asked for by scope go in the ID token, as the server
    // reads no userinfo.
    conformIdTokenClaims: false,
    async findAccount(_ctx, sub) {
      if (!users[sub]) return undefined;
      return { accountId: sub, async claims() { return { sub, ...users[sub] }; } };
    },
    cookies: { keys: ['upstream-op-test-only'] },
    features: { devInteractions: { enabled: true } },
  });
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});
