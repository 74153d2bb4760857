// tests/support/idp.mjs: a real OpenID Connect provider (npm oidc-provider 9) for tenantgate's tests and demo.
//
// Run:   node tests/support/idp.mjs            (after `scripts/deps`; `. .deps/env.sh` sets TG_NODE_MODULES)
// oidc-provider is ESM-only and ESM ignores NODE_PATH, so it is loaded by absolute path: the first of
// $TG_NODE_MODULES, $TG_NODE_PATH, each entry of $NODE_PATH, <repo>/.deps/node/node_modules that holds
// oidc-provider is resolved with createRequire (package.json "main") and import()ed as a file URL.
//
// Environment:
//   IDP_PORT          port on 127.0.0.1 (default 0 = pick a free one; the ready line tells which)
//   IDP_ISSUER        issuer (default http://127.0.0.1:<port><IDP_ISSUER_PATH>, no trailing slash). Discovery
//                     is at <issuer>/.well-known/openid-configuration, token endpoint <issuer>/token,
//                     JWKS <issuer>/jwks, authorization <issuer>/auth. Its path is served as a prefix.
//   IDP_ISSUER_PATH   path part of the default issuer, e.g. /realms/master to look like Keycloak (default "")
//   IDP_KEYS_FILE     JSON private JWKS {"keys":[...]} (each with kid, alg, use:"sig"). Its public parts are
//                     published at /jwks and tokens are signed with them. If the file does not exist, one RSA
//                     (RS256) and one EC P-256 (ES256) key are generated and written there (mode 0600).
//                     Unset: the two keys are generated in memory only. Restart with another file to rotate.
//   IDP_CLIENTS_FILE  JSON array of clients (default: none):
//                       { "client_id": "...", "client_secret": "...",
//                         "grant_types": ["client_credentials"] | ["authorization_code", "refresh_token"],
//                         "redirect_uris": [...],          needed for authorization_code
//                         "vm_access": {...} | "string",   put as-is into client_credentials access tokens
//                         "extra_claims": {...},           more claims for its client_credentials tokens
//                         "token_alg": "RS256" | "ES256" | any alg of a key in the keys file (default RS256),
//                         "token_kid": "...",              sign with this key (default: first key for alg)
//                         "token_typ": "JWT",              JWT header typ (default at+jwt, RFC 9068)
//                         "token_ttl": 600,                access-token lifetime in s (default IDP_TOKEN_TTL)
//                         "token_format": "opaque" }       opaque access tokens for this client (default
//                                                          IDP_ACCESS_TOKEN_FORMAT, else jwt)
//                     Any other standard client metadata (token_endpoint_auth_method, response_types, ...)
//                     is passed to oidc-provider. Defaults: client_secret_basic; response_types [] unless
//                     grant_types holds authorization_code. Also used for user tokens: token_alg/kid/typ/ttl.
//   IDP_USERS_FILE    JSON object for the authorization-code flow (default: no users):
//                       { "<username>": { "password": "...", "vm_access": {...}, "extra_claims": {...},
//                                         "name": "..." } }
//                     Access tokens issued to a user carry the user's vm_access (sub = username).
//   IDP_TOKEN_TTL     default access-token lifetime in seconds (default 600)
//   IDP_ACCESS_TOKEN_FORMAT  jwt (default) or opaque: opaque access tokens are random strings; the
//                     introspection endpoint (<issuer>/token/introspection, any confidential client may
//                     ask) answers with their claims (vm_access, client_id, exp, aud, ...; sub for user
//                     tokens) or {"active":false}; <issuer>/token/revocation revokes (the token's own client)
//   IDP_LOG_REQUESTS  when 1, print "idp request METHOD PATH" on stdout for every request (no query string),
//                     so tests can count how often a client fetched e.g. /jwks
//
// Access tokens are JWTs (resourceIndicators with defaultResource urn:tenantgate and accessTokenFormat jwt):
//   header  {alg, typ:"at+jwt", kid}
//   payload {vm_access?, ...extra_claims, jti, sub, iat, exp, scope?, client_id, iss, aud:"urn:tenantgate"}
//   curl -s -u CLIENT:SECRET -d grant_type=client_credentials http://127.0.0.1:PORT/token
//
// Scripted login (authorization code; keep cookies between steps):
//   1. GET  /auth?client_id=C&response_type=code&scope=openid+profile&redirect_uri=R&state=S
//        -> 303 Location /interaction/<uid>        (sets the _interaction cookies)
//   2. POST /interaction/<uid>/login   (form: login=<username>&password=<password>)
//        -> 303 Location <issuer>/auth/<uid>       (wrong password: 401 and the form again)
//   3. GET  /auth/<uid> -> 303 Location R?code=...&state=S&iss=...   (consent is granted automatically)
//   4. POST /token grant_type=authorization_code&code=...&redirect_uri=R (client auth as registered)
//        -> {access_token (JWT with vm_access), id_token, refresh_token if granted, ...}
//   GET /interaction/<uid> shows an HTML form (fields login, password) for a person.
//
// Prints "idp listening on http://127.0.0.1:PORT" on stdout once it serves. SIGTERM/SIGINT: exit 0 at once.

import { createRequire } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

const here = path.dirname(fileURLToPath(import.meta.url));
const RESOURCE = 'urn:tenantgate';

function die(msg) {
  process.stderr.write(`idp: ${msg}\n`);
  process.exit(1);
}

async function loadOidcProvider() {
  const candidates = [
    process.env.TG_NODE_MODULES,
    process.env.TG_NODE_PATH,
    ...(process.env.NODE_PATH || '').split(path.delimiter),
    path.resolve(here, '../../.deps/node/node_modules'),
  ].filter(Boolean);
  for (const dir of candidates) {
    if (!fs.existsSync(path.join(dir, 'oidc-provider', 'package.json'))) continue;
    const entry = createRequire(path.join(dir, 'noop.js')).resolve('oidc-provider');
    return import(pathToFileURL(entry).href);
  }
  return die(`oidc-provider not found in ${candidates.join(', ')}; run scripts/deps`);
}

function readJson(file, what) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    return die(`cannot read ${what} ${file}: ${e.message}`);
  }
}

function generateKeys() {
  const jwk = (kp, alg) => {
    const k = kp.privateKey.export({ format: 'jwk' });
    return { ...k, kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`, alg, use: 'sig' };
  };
  return {
    keys: [
      jwk(crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }), 'RS256'),
      jwk(crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ES256'),
    ],
  };
}

function loadKeys() {
  const file = process.env.IDP_KEYS_FILE;
  if (!file) return generateKeys();
  if (!fs.existsSync(file)) {
    const jwks = generateKeys();
    fs.writeFileSync(file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
    return jwks;
  }
  const jwks = readJson(file, 'IDP_KEYS_FILE');
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) die(`IDP_KEYS_FILE ${file} has no "keys"`);
  for (const k of jwks.keys) {
    if (!k.kid || !k.alg || !k.d) die(`IDP_KEYS_FILE ${file}: every key needs kid, alg and its private part`);
  }
  return jwks;
}

// Our own per-client fields, kept apart from the metadata given to oidc-provider.
const OWN_CLIENT_FIELDS = ['vm_access', 'extra_claims', 'token_alg', 'token_kid', 'token_typ', 'token_ttl', 'token_format'];
const clientsFile = process.env.IDP_CLIENTS_FILE;
const clientList = clientsFile ? readJson(clientsFile, 'IDP_CLIENTS_FILE') : [];
if (!Array.isArray(clientList)) die('IDP_CLIENTS_FILE must hold a JSON array');
const clientExtras = new Map();
const clients = clientList.map((c) => {
  if (!c.client_id) die('every client needs a client_id');
  const meta = { ...c };
  const extras = {};
  for (const f of OWN_CLIENT_FIELDS) {
    if (f in meta) extras[f] = meta[f];
    delete meta[f];
  }
  clientExtras.set(c.client_id, extras);
  meta.grant_types ??= ['client_credentials'];
  if (!('response_types' in meta)) {
    meta.response_types = meta.grant_types.includes('authorization_code') ? ['code'] : [];
  }
  if (meta.response_types.length === 0) meta.redirect_uris ??= [];
  return meta;
});

const usersFile = process.env.IDP_USERS_FILE;
const users = usersFile ? readJson(usersFile, 'IDP_USERS_FILE') : {};
const defaultTtl = Number(process.env.IDP_TOKEN_TTL || 600);
const logRequests = process.env.IDP_LOG_REQUESTS === '1';

const port = Number(process.env.IDP_PORT || 0);
let callback; // set once the provider exists
const server = http.createServer((req, res) => handle(req, res).catch((e) => {
  process.stderr.write(`idp: ${e.stack || e}\n`);
  if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
  res.end('internal error\n');
}));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
const issuer = (process.env.IDP_ISSUER || `http://127.0.0.1:${actualPort}${process.env.IDP_ISSUER_PATH || ''}`)
  .replace(/\/$/, '');
const prefix = new URL(issuer).pathname.replace(/\/$/, ''); // '' or e.g. '/realms/master'

// Progress on stderr: when a start is slow, the log says which step it was in.
const step = (what) => process.stderr.write(`idp: ${new Date().toISOString()} ${what}\n`);
step(`listening socket bound on port ${actualPort}; loading oidc-provider`);
const { default: Provider, errors: oidcErrors } = await loadOidcProvider();
step('oidc-provider loaded; loading or generating keys');

const ttlFor = (clientId) => Number(clientExtras.get(clientId)?.token_ttl ?? defaultTtl);

const jwks = loadKeys();
step('keys ready; creating the provider');
const provider = new Provider(issuer, {
  clients,
  jwks,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
  scopes: ['openid', 'profile', 'offline_access'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator, client) => {
        if (resourceIndicator !== RESOURCE) throw new oidcErrors.InvalidTarget();
        const extras = clientExtras.get(client.clientId) || {};
        const sign = { alg: extras.token_alg || 'RS256' };
        if (extras.token_kid) sign.kid = extras.token_kid;
        return {
          scope: 'openid profile',
          audience: RESOURCE,
          // Opaque access tokens (introspected by their resource server) per client or for all.
          accessTokenFormat: extras.token_format || process.env.IDP_ACCESS_TOKEN_FORMAT || 'jwt',
          accessTokenTTL: ttlFor(client.clientId),
          jwt: { sign },
        };
      },
    },
  },
  formats: {
    customizers: {
      jwt: async (ctx, token, jwt) => {
        const typ = clientExtras.get(token.clientId)?.token_typ;
        if (typ) jwt.header = { ...jwt.header, typ };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const src = token.accountId ? users[token.accountId] : clientExtras.get(token.clientId);
    if (!src) return undefined;
    const claims = { ...(src.extra_claims || {}) };
    if (src.vm_access !== undefined) claims.vm_access = src.vm_access;
    return claims;
  },
  findAccount: async (ctx, sub) => {
    if (!Object.hasOwn(users, sub)) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, name: users[sub].name || sub, preferred_username: sub }),
    };
  },
  // Every client here is first-party: grant whatever it asked for, so no consent screen appears.
  loadExistingGrant: async (ctx) => {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid profile offline_access');
    grant.addResourceScope(RESOURCE, 'openid profile');
    await grant.save();
    return grant;
  },
  // Refresh tokens for every client allowed the refresh_token grant (not only with offline_access+consent).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  interactions: { url: async (ctx, interaction) => `${prefix}/interaction/${interaction.uid}` },
  pkce: { required: () => false },
  ttl: {
    AccessToken: (ctx, token, client) => token.resourceServer?.accessTokenTTL || ttlFor(client.clientId),
    ClientCredentials: (ctx, token, client) => token.resourceServer?.accessTokenTTL || ttlFor(client.clientId),
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>error</title><pre>${esc(JSON.stringify(out, null, 2))}</pre>`;
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => process.stderr.write(`idp: server_error: ${err.stack || err}\n`));
callback = provider.callback();

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginForm(uid, clientId, message) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>tenantgate test IdP: sign in</title></head>
<body><h1>Sign in</h1><p>to ${esc(clientId)}</p>${message ? `<p style="color:red">${esc(message)}</p>` : ''}
<form method="post" action="${esc(prefix)}/interaction/${esc(uid)}/login">
<label>Username <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>
<p><a href="${esc(prefix)}/interaction/${esc(uid)}/abort">Cancel</a></p></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function handle(req, res) {
  if (logRequests) process.stdout.write(`idp request ${req.method} ${req.url.split('?')[0]}\n`);
  if (!callback) return send(res, 503, 'text/plain', 'starting\n');
  if (prefix) {
    // Serve the issuer's path as a mount point; oidc-provider derives it from req.originalUrl.
    if (req.url !== prefix && !req.url.startsWith(`${prefix}/`) && !req.url.startsWith(`${prefix}?`)) {
      return send(res, 404, 'text/plain', 'not found\n');
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(prefix.length) || '/';
  }
  const url = new URL(req.url, 'http://x');
  const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/);
  if (!m) return callback(req, res);
  const [, uid, action] = m;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    return send(res, 400, 'text/plain', `interaction ${uid}: ${e.message}\n`);
  }
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch\n');
  const clientId = details.params.client_id;

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (details.prompt.name === 'consent') {
    // Not expected (loadExistingGrant grants everything), but finish it rather than hang.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId });
    const d = details.prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [ind, scope] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(ind, scope.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (details.prompt.name !== 'login') {
    return send(res, 501, 'text/plain', `prompt ${details.prompt.name} not implemented\n`);
  }
  if (req.method === 'GET' && !action) return send(res, 200, 'text/html', loginForm(uid, clientId));
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const password = form.get('password') || '';
    const user = Object.hasOwn(users, login) ? users[login] : undefined;
    const want = Buffer.from(typeof user?.password === 'string' ? user.password : '');
    const got = Buffer.from(password);
    const ok = user && want.length > 0 && want.length === got.length && crypto.timingSafeEqual(want, got);
    if (!ok) return send(res, 401, 'text/html', loginForm(uid, clientId, 'Invalid username or password.'));
    return provider.interactionFinished(req, res, { login: { accountId: login } }, {
      mergeWithLastSubmission: false,
    });
  }
  return send(res, 405, 'text/plain', 'method not allowed\n');
}

process.stdout.write(`idp listening on http://127.0.0.1:${actualPort}\n`);
