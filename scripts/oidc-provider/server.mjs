// A real OpenID Connect provider for Shoal's tests: npm oidc-provider with two
// native clients (and a web one, shoal-web, when CONFIG lists webRedirectUris), users from a JSON config, HTML login and consent forms that tests
// submit as a browser would, the device flow, refresh tokens and revocation.
//
// Test controls under /test/: POST /test/rotate replaces the signing key;
// POST /test/sign signs the given claims with the current key or a foreign one.
//
// Usage: node server.mjs CONFIG.json   (prints "ready <issuer>" when listening)
// CONFIG: {port, host (default 127.0.0.1), idTokenTtl, users, tls: {cert, key},
//          webRedirectUris}

import { readFileSync } from 'node:fs';
import { createServer as createHttp } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { randomUUID, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK, importJWK, SignJWT } from 'jose';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map(config.users.map((u) => [u.username, u]));
const scheme = config.tls ? 'https' : 'http';
const host = config.host || '127.0.0.1';
const issuer = `${scheme}://${host}:${config.port}`;
const cookieKeys = [randomBytes(32).toString('hex')];

async function newKey() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html><head><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function configuration(signingKey) {
  return {
    clients: [
      {
        client_id: 'shoal',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
      },
      ...(config.webRedirectUris?.length
        ? [
            {
              client_id: 'shoal-web',
              application_type: 'web',
              token_endpoint_auth_method: 'none',
              redirect_uris: config.webRedirectUris,
              grant_types: ['authorization_code', 'refresh_token'],
              response_types: ['code'],
            },
          ]
        : []),
      {
        client_id: 'other',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    async findAccount(ctx, id) {
      const user = users.get(id);
      if (!user) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: user.email,
            email_verified: true,
            name: user.username,
            groups: user.groups,
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: false,
    cookies: { keys: cookieKeys },
    jwks: { keys: [signingKey] },
    ttl: {
      IdToken: config.idTokenTtl,
      AccessToken: config.idTokenTtl,
      AuthorizationCode: 60,
      DeviceCode: 300,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
    },
    // Every client that may refresh gets a refresh token, offline_access or not.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  };
}

let current = { key: await newKey() };
current.provider = new Provider(issuer, configuration(current.key));

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

// The login and consent steps of an interaction.
async function interaction(req, res, path) {
  const provider = current.provider;
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    return send(res, 400, 'text/plain', 'interaction mismatch');
  }
  if (req.method === 'GET') {
    if (details.prompt.name === 'login') {
      return send(res, 200, 'text/html', page('Sign in', `<form method="post" action="/interaction/${uid}/login">
<input type="text" name="login" autofocus><input type="password" name="password">
<button type="submit">Sign in</button></form>`));
    }
    return send(res, 200, 'text/html', page('Allow access', `<p>${escape(details.params.client_id)} asks for ${escape(details.params.scope)}</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Allow</button></form>`));
  }
  if (action === 'login') {
    const form = await readForm(req);
    const user = users.get(form.get('login'));
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, 'text/html', page('Sign in', `<p>wrong user name or password</p><form method="post" action="/interaction/${uid}/login">
<input type="text" name="login"><input type="password" name="password"><button type="submit">Sign in</button></form>`));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm') {
    const { prompt: { details: missing }, params, session: { accountId } } = details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 404, 'text/plain', 'no such interaction step');
}

// The test controls.
async function testControl(req, res, path) {
  if (req.method !== 'POST') return send(res, 405, 'text/plain', 'POST only');
  if (path === '/test/rotate') {
    const key = await newKey();
    // Sessions, grants and tokens live in the module-wide memory adapter, so a
    // new Provider with the new key keeps them.
    current = { key, provider: new Provider(issuer, configuration(key)) };
    return send(res, 200, 'application/json', JSON.stringify({ kid: key.kid }));
  }
  if (path === '/test/sign') {
    const body = await readJson(req);
    const jwk = body.key === 'foreign' ? await newKey() : current.key;
    const key = await importJWK(jwk, 'RS256');
    const token = await new SignJWT(body.claims).setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' }).sign(key);
    return send(res, 200, 'application/json', JSON.stringify({ token }));
  }
  return send(res, 404, 'text/plain', 'no such test control');
}

async function handle(req, res) {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
    if (path.startsWith('/test/')) return await testControl(req, res, path);
    return current.provider.callback()(req, res);
  } catch (err) {
    console.error(`error on ${req.method} ${path}:`, err);
    if (!res.headersSent) send(res, 500, 'text/plain', String(err && err.message));
    return undefined;
  }
}

const server = config.tls
  ? createHttps({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }, handle)
  : createHttp(handle);
server.listen(config.port, host, () => {
  console.log(`ready ${issuer} pid ${process.pid}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
