#!/usr/bin/env node
// A real OpenID Connect provider (panva's oidc-provider) dressed up as Dex, for modelgate's
// end-to-end tests. LOOPBACK-ONLY TEST FIXTURE: static users with known passwords, a fixed
// client secret and unauthenticated /__test/ controls that sign arbitrary tokens. Never expose it.
//
//   npm ci --prefix tests/oidc
//   node tests/oidc/provider.mjs --port 0 \
//     --client-redirect http://127.0.0.1:8080/authservice/oidc/callback
//   # stdout: listening http://127.0.0.1:<port>/dex   (one line, then nothing; logs go to stderr)
//   curl -s http://127.0.0.1:<port>/dex/.well-known/openid-configuration
//
// What makes it look like Dex: issuer `<origin>/dex`, Dex's endpoint paths (/dex/auth, /dex/token,
// /dex/keys, /dex/userinfo, /dex/device/code, /dex/device), RS256 ID tokens that carry `email`,
// `email_verified`, `name`, `preferred_username` and `groups` directly (scope `groups`), a
// staticPasswords-style user list, a plain login form with `login` and `password` fields, no
// consent screen, and refresh tokens for the confidential client without `prompt=consent`.
// With --exit-with-stdin it exits when its stdin closes, so a killed test run leaves nothing behind.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// oidc-provider prints notices with console.info; stdout carries only the readiness line.
console.log = console.error;
console.info = console.error;

const MOUNT = '/dex';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'client-redirect': { type: 'string', multiple: true, default: [] },
    // Exit when stdin closes: the test harness holds the other end, so a test process that
    // dies without cleaning up takes the provider with it.
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});

// Dex staticPasswords: the `sub` Dex issues is base64(protobuf{user_id, connector_id "local"}),
// reproduced here so subjects look like the ones Kubeflow sees.
const USERS = [
  {
    email: 'user@example.com',
    password: 'password',
    username: 'user',
    userID: '08a8684b-db88-4b73-90a9-3cd1661f5466',
    groups: ['kubeflow-users'],
  },
  {
    email: 'admin@example.com',
    password: 'password',
    username: 'admin',
    userID: '2b8a1a2e-7b4e-4b1e-9a8e-5a3b7d1c9f10',
    groups: ['admins', 'kubeflow-users'],
  },
].map((user) => ({ ...user, sub: dexSubject(user.userID, 'local') }));

function dexSubject(userID, connectorID) {
  const field = (tag, value) => Buffer.concat([Buffer.from([tag, value.length]), Buffer.from(value)]);
  return Buffer.concat([field(0x0a, userID), field(0x12, connectorID)]).toString('base64').replace(/=+$/, '');
}

const bySub = new Map(USERS.map((user) => [user.sub, user]));
const byLogin = new Map(USERS.map((user) => [user.email, user]));

// ---- keys -----------------------------------------------------------------------------------

const newKid = () => crypto.randomBytes(20).toString('hex');

function newRsaKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: newKid(), alg: 'RS256', use: 'sig' };
}

function newEcKey() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: newKid(), alg: 'ES256', use: 'sig' };
}

const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub; // eslint-disable-line no-unused-vars

// RSA keys newest first: oidc-provider signs with the first key that fits the algorithm, and
// keeps publishing (and accepting) the older ones, which is what a real rotation looks like.
const state = {
  rsaKeys: [newRsaKey()],
  ecKey: newEcKey(),
  jwksDown: false,
  stats: { keys_fetches: 0, discovery_fetches: 0, token_requests: 0, userinfo_requests: 0 },
  provider: undefined,
  callback: undefined,
};
const currentKey = () => state.rsaKeys[0];

// ---- the provider ---------------------------------------------------------------------------

// A redirect to loopback, or to a host under example.com (reserved for examples, RFC 2606: the
// test model hosts, which the tests resolve to loopback), on any port.
const isTestRedirect = (value) => {
  try {
    const url = new URL(value);
    return ['http:', 'https:'].includes(url.protocol)
      && (url.hostname === '127.0.0.1' || url.hostname.endsWith('.example.com'));
  } catch {
    return false;
  }
};

function buildProvider(issuer) {
  const redirects = args['client-redirect'].length
    ? args['client-redirect']
    : ['http://127.0.0.1/authservice/oidc/callback'];

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'modelgate',
        client_name: 'modelgate',
        client_secret: 'modelgate-secret',
        // Registered as basic; oidc-provider accepts client_secret_post for it as well.
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
        redirect_uris: redirects,
        post_logout_redirect_uris: redirects,
      },
      {
        client_id: 'modelgate-cli',
        client_name: 'modelgate CLI',
        token_endpoint_auth_method: 'none',
        application_type: 'native',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
    jwks: { keys: [...state.rsaKeys, state.ecKey] },
    cookies: {
      // Prefixed and scoped to /dex so they never collide with the gateway's cookies, which
      // share the host (cookies ignore ports).
      names: { session: '_dex_session', interaction: '_dex_interaction', resume: '_dex_interaction_resume' },
      long: { httpOnly: true, sameSite: 'lax', path: MOUNT },
      short: { httpOnly: true, sameSite: 'lax' },
      keys: ['modelgate-oidc-fixture-cookie-key'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Dex puts the scope's claims into the ID token itself.
    conformIdTokenClaims: false,
    async findAccount(_ctx, sub) {
      const user = bySub.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: user.email,
            email_verified: true,
            name: user.username,
            preferred_username: user.username,
            groups: user.groups,
          };
        },
      };
    },
    // Dex issues refresh tokens without prompt=consent (which oidc-provider needs before it
    // keeps offline_access); here every client allowed the refresh_token grant gets one.
    // Dex's defaults where it has them (ID tokens 24 h, device requests 5 min).
    ttl: {
      AccessToken: 86400,
      AuthorizationCode: 600,
      DeviceCode: 300,
      Grant: 14 * 86400,
      IdToken: 86400,
      Interaction: 3600,
      RefreshToken: 14 * 86400,
      Session: 14 * 86400,
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    pkce: {
      // Required for the public client, allowed (S256) for the confidential one, like Dex.
      required: (_ctx, client) => client.clientAuthMethod === 'none',
    },
    routes: {
      authorization: '/auth',
      token: '/token',
      jwks: '/keys',
      userinfo: '/userinfo',
      device_authorization: '/device/code',
      code_verification: '/device',
      end_session: '/logout',
    },
    interactions: {
      url: (_ctx, interaction) => `${MOUNT}/interaction/${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      pushedAuthorizationRequests: { enabled: false }, // Dex has no PAR endpoint
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        userCodeInputSource: async (ctx, form, _out, err) => {
          const msg = err ? `<p class="error">${err.userCode || err.name === 'NoCodeError' ? 'Invalid user code.' : 'Something went wrong.'}</p>` : '';
          ctx.body = page('Enter user code', `${msg}${form}<button type="submit" form="op.deviceInputForm">Submit</button>`);
        },
        userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
          ctx.body = page('Confirm device', `<p>${escapeHtml(client.clientName || client.clientId)} asks for <code>${escapeHtml(userCode)}</code></p>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
        },
        successSource: async (ctx) => {
          ctx.body = page('Login Successful', '<p>Return to your device to continue.</p>');
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = page('Sign out', `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<p>You have been signed out.</p>');
        },
      },
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre>`);
    },
  });

  // Besides the registered redirect URIs, any loopback or example.com one on any port is
  // accepted, so a test can start the provider before its gateway has chosen its port.
  const { prototype } = provider.Client;
  const exact = prototype.redirectUriAllowed;
  prototype.redirectUriAllowed = function redirectUriAllowed(value) {
    return exact.call(this, value) || (this.clientId === 'modelgate' && isTestRedirect(value));
  };
  const exactLogout = prototype.postLogoutRedirectUriAllowed;
  prototype.postLogoutRedirectUriAllowed = function postLogoutRedirectUriAllowed(value) {
    return exactLogout.call(this, value) || (this.clientId === 'modelgate' && isTestRedirect(value));
  };

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
    'code_verification.error', 'device_authorization.error', 'userinfo.error', 'jwks.error']) {
    provider.on(event, (_ctx, err) => console.error(`oidc ${event}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
  }
  return provider;
}

function install(issuer) {
  state.provider = buildProvider(issuer);
  state.callback = state.provider.callback();
}

// ---- HTML -----------------------------------------------------------------------------------

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h2>${escapeHtml(title)}</h2>
${body}
</body></html>
`;
}

function loginPage(action, login, error) {
  return page('Log in to Your Account', `${error ? `<div id="login-error" class="error">${escapeHtml(error)}</div>\n` : ''}<form method="post" action="${escapeHtml(action)}">
<input type="text" id="login" name="login" value="${escapeHtml(login)}" placeholder="email address" autofocus/>
<input type="password" id="password" name="password" placeholder="password"/>
<button type="submit" id="submit-login">Login</button>
</form>`);
}

// ---- login / consent interaction ------------------------------------------------------------

// A grant for everything the client asked for: Dex has no consent screen for static clients.
async function grantAll(provider, details, accountId) {
  const { params, prompt } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = prompt.details ?? {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function interaction(req, res, uid) {
  const { provider } = state;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, 'text/html; charset=utf-8', page('Error', `<p>${escapeHtml(err.message)}</p>`));
  }
  if (details.uid !== uid) {
    return send(res, 400, 'text/html; charset=utf-8', page('Error', '<p>interaction mismatch</p>'));
  }
  const action = `${MOUNT}/interaction/${uid}`;

  if (details.prompt.name === 'login') {
    if (req.method === 'GET') {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(action, '', ''));
    }
    if (req.method !== 'POST') return send(res, 405, 'text/plain', 'method not allowed\n');
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login') ?? '';
    const user = byLogin.get(login);
    if (!user || user.password !== (form.get('password') ?? '')) {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(action, login, 'Invalid Email Address and password.'));
    }
    const grantId = await grantAll(provider, details, user.sub);
    return provider.interactionFinished(req, res, { login: { accountId: user.sub }, consent: { grantId } }, { mergeWithLastSubmission: false });
  }

  // Any other prompt (consent) is granted at once, GET or POST.
  const grantId = await grantAll(provider, details, details.session?.accountId);
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

// ---- test controls --------------------------------------------------------------------------

const b64url = (value) => Buffer.from(value).toString('base64url');

// Signs exactly the given header and claims. `none` yields an unsigned token; HS* uses
// `hmac_secret` (default: the current RSA public key as PEM, the classic algorithm confusion).
function sign(header, claims, hmacSecret) {
  const key = currentKey();
  const alg = header.alg ?? 'RS256';
  const defaults = { alg, typ: 'JWT' };
  if (alg.startsWith('ES')) defaults.kid = state.ecKey.kid;
  else if (alg.startsWith('RS') || alg.startsWith('PS')) defaults.kid = key.kid;
  const fullHeader = { ...defaults, ...header };
  const input = `${b64url(JSON.stringify(fullHeader))}.${b64url(JSON.stringify(claims))}`;
  const rsa = crypto.createPrivateKey({ key, format: 'jwk' });
  const bits = alg.slice(2);
  let signature;
  switch (alg) {
    case 'none':
      signature = Buffer.alloc(0);
      break;
    case 'RS256': case 'RS384': case 'RS512':
      signature = crypto.sign(`sha${bits}`, Buffer.from(input), rsa);
      break;
    case 'PS256': case 'PS384': case 'PS512':
      signature = crypto.sign(`sha${bits}`, Buffer.from(input), {
        key: rsa, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(bits) / 8,
      });
      break;
    case 'ES256':
      signature = crypto.sign('sha256', Buffer.from(input), {
        key: crypto.createPrivateKey({ key: state.ecKey, format: 'jwk' }), dsaEncoding: 'ieee-p1363',
      });
      break;
    case 'HS256': case 'HS384': case 'HS512': {
      const secret = hmacSecret ?? crypto.createPublicKey({ key: publicJwk(key), format: 'jwk' })
        .export({ type: 'spki', format: 'pem' });
      signature = crypto.createHmac(`sha${bits}`, secret).update(input).digest();
      break;
    }
    default:
      throw new Error(`cannot sign alg ${alg}`);
  }
  return `${input}.${b64url(signature)}`;
}

async function testControl(req, res, path) {
  const json = (status, body) => send(res, status, 'application/json', `${JSON.stringify(body)}\n`);
  const route = `${req.method} ${path}`;
  switch (route) {
    case 'POST /__test/rotate': {
      const key = newRsaKey();
      state.rsaKeys.unshift(key);
      // oidc-provider's key set is fixed per instance; a rotated deployment is a new instance
      // with the new key first. Sessions, grants and codes live in the shared memory adapter.
      install(state.provider.issuer);
      console.error(`rotated: signing kid ${key.kid}, ${state.rsaKeys.length} RSA keys published`);
      return json(200, { kid: key.kid });
    }
    case 'POST /__test/jwks/down':
      state.jwksDown = true;
      return json(200, { jwks: 'down' });
    case 'POST /__test/jwks/up':
      state.jwksDown = false;
      return json(200, { jwks: 'up' });
    case 'POST /__test/sign': {
      let body;
      try {
        body = JSON.parse(await readBody(req));
        return json(200, { token: sign(body.header ?? {}, body.claims ?? {}, body.hmac_secret) });
      } catch (err) {
        return json(400, { error: err.message });
      }
    }
    case 'GET /__test/keys/current':
      return json(200, publicJwk(currentKey()));
    case 'GET /__test/stats':
      return json(200, state.stats);
    default:
      return json(404, { error: `no test control ${route}` });
  }
}

// ---- server ---------------------------------------------------------------------------------

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const path = req.url.split('?')[0];
  if (path.startsWith('/__test/')) return testControl(req, res, path);

  if (path === `${MOUNT}/keys`) {
    state.stats.keys_fetches += 1;
    if (state.jwksDown) {
      return send(res, 503, 'application/json', '{"error":"jwks down (test control)"}\n');
    }
  } else if (path === `${MOUNT}/.well-known/openid-configuration`) {
    state.stats.discovery_fetches += 1;
  } else if (path === `${MOUNT}/token`) {
    state.stats.token_requests += 1;
  } else if (path === `${MOUNT}/userinfo`) {
    state.stats.userinfo_requests += 1;
  }

  const interactionPath = path.match(/^\/dex\/interaction\/([^/]+)$/);
  if (interactionPath) return interaction(req, res, interactionPath[1]);

  if (path === MOUNT || path.startsWith(`${MOUNT}/`)) {
    // Mounted like app.use('/dex', provider.callback()): oidc-provider derives the mount path
    // from originalUrl minus url.
    req.originalUrl = req.url;
    req.url = req.url.slice(MOUNT.length) || '/';
    return state.callback(req, res);
  }
  return send(res, 404, 'text/plain', 'not found\n');
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  const { method, url } = req; // before the /dex prefix is stripped
  res.on('finish', () => console.error(`${method} ${url} -> ${res.statusCode} (${Date.now() - started} ms)`));
  handle(req, res).catch((err) => {
    console.error(`error on ${method} ${url}: ${err.stack}`);
    if (!res.headersSent) send(res, 500, 'text/plain', `${err.message}\n`);
    else res.destroy();
  });
});

server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}${MOUNT}`;
  install(issuer);
  process.stdout.write(`listening ${issuer}\n`);
});

if (args['exit-with-stdin']) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
