// A third-party client presenting a DPoP-bound access token at a protected
// resource (RFC 9449 §7): panva's oauth4webapi, with the key the token is
// bound to, makes a GET with `Authorization: DPoP` and a proof naming the
// token in `ath`; when the resource asks for a nonce (a 401 with a `DPoP`
// challenge, error `use_dpop_nonce`), the library keeps the `DPoP-Nonce`
// and the request is made again.
//
//   node dpop-resource.mjs URL ACCESS_TOKEN PRIVATE_KEY_PKCS8_BASE64 PUBLIC_JWK_JSON
//
// Prints {"status", "body", "nonce_challenges"} on stdout and exits 0. On
// anything unexpected, prints why on stderr and exits 1.

import * as oauth from 'oauth4webapi';

const [url, accessToken, pkcs8, publicJwk] = process.argv.slice(2);
if (!url || !accessToken || !pkcs8 || !publicJwk) {
  console.error('usage: node dpop-resource.mjs URL ACCESS_TOKEN PRIVATE_KEY_PKCS8_BASE64 PUBLIC_JWK_JSON');
  process.exit(2);
}

const algorithm = { name: 'ECDSA', namedCurve: 'P-256' };
let nonceChallenges = 0;

try {
  const privateKey = await crypto.subtle.importKey('pkcs8', Buffer.from(pkcs8, 'base64'), algorithm, false, ['sign']);
  const publicKey = await crypto.subtle.importKey('jwk', JSON.parse(publicJwk), algorithm, true, ['verify']);
  const DPoP = oauth.DPoP({ client_id: 'unused' }, { privateKey, publicKey });
  // The server runs on plain-HTTP loopback in the tests.
  const options = { DPoP, [oauth.allowInsecureRequests]: true };
  const request = () => oauth.protectedResourceRequest(accessToken, 'GET', new URL(url), new Headers(), null, options);
  let response;
  try {
    response = await request();
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    nonceChallenges += 1;
    response = await request();
  }
  console.log(
    JSON.stringify({ status: response.status, body: await response.json(), nonce_challenges: nonceChallenges }),
  );
} catch (error) {
  console.error(error?.stack ?? String(error), error?.cause ? JSON.stringify(error.cause) : '');
  process.exit(1);
}
