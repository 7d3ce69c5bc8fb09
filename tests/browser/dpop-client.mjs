// A third-party OAuth client using DPoP (RFC 9449): panva's oauth4webapi
// discovers the realm, gets a client credentials token bound to a key it
// makes (answering a `use_dpop_nonce` challenge the way the library does:
// it keeps the `DPoP-Nonce` and the request is made again), then
// exchanges that token (RFC 8693) with a proof of the same key.
//
//   node dpop-client.mjs ISSUER CLIENT_ID CLIENT_SECRET
//
// Prints {"token_type", "access_token", "exchanged_token_type",
// "exchanged_access_token", "jwk", "nonce_challenges"} on stdout and exits
// 0; `jwk` is the public key the tokens should be bound to. On anything
// unexpected, prints why on stderr and exits 1.

import * as oauth from 'oauth4webapi';

const [issuerArg, clientId, clientSecret] = process.argv.slice(2);
if (!issuerArg || !clientId || !clientSecret) {
  console.error('usage: node dpop-client.mjs ISSUER CLIENT_ID CLIENT_SECRET');
  process.exit(2);
}

// The realm runs on plain-HTTP loopback in the tests.
const insecure = { [oauth.allowInsecureRequests]: true };

// `request()` and its processing, made again once if the server asked for
// a nonce: the DPoP handle has kept the one it sent.
let nonceChallenges = 0;
async function withNonceRetry(request, process) {
  try {
    return await process(await request());
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    nonceChallenges += 1;
    return process(await request());
  }
}

try {
  const issuer = new URL(issuerArg);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
  const client = { client_id: clientId };
  const auth = oauth.ClientSecretBasic(clientSecret);
  const keyPair = await oauth.generateKeyPair('ES256');
  const DPoP = oauth.DPoP(client, keyPair);

  const token = await withNonceRetry(
    () => oauth.clientCredentialsGrantRequest(as, client, auth, { scope: 'read' }, { DPoP, ...insecure }),
    (response) => oauth.processClientCredentialsResponse(as, client, response),
  );
  const exchanged = await withNonceRetry(
    () =>
      oauth.genericTokenEndpointRequest(
        as,
        client,
        auth,
        'urn:ietf:params:oauth:grant-type:token-exchange',
        {
          subject_token: token.access_token,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          scope: 'read write',
        },
        { DPoP, ...insecure },
      ),
    (response) => oauth.processGenericTokenEndpointResponse(as, client, response),
  );
  const jwk = await crypto.subtle.exportKey('jwk', keyPair.publicKey);
  console.log(
    JSON.stringify({
      token_type: token.token_type,
      access_token: token.access_token,
      exchanged_token_type: exchanged.token_type,
      exchanged_access_token: exchanged.access_token,
      jwk,
      nonce_challenges: nonceChallenges,
    }),
  );
} catch (error) {
  console.error(error?.stack ?? String(error), error?.cause ? JSON.stringify(error.cause) : '');
  process.exit(1);
}
