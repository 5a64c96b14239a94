// Test fixture: a real OpenID Connect provider on loopback for the single sign-on browser test
// (tests/test_sso.py), built on the oidc-provider package from npm (package.json pins it).
//
//   OIDC_PORT=9000 OIDC_CLIENT_ID=app OIDC_CLIENT_SECRET=s3cret \
//   OIDC_REDIRECT_URI=http://127.0.0.1:8502/oauth2callback node tests/oidc_provider.mjs
//
// Issuer http://127.0.0.1:$OIDC_PORT, listens on 127.0.0.1 only, prints
// "ready http://127.0.0.1:PORT" on stdout (the only stdout line; the library's
// informational notices are redirected to stderr).
// Login page: any login name + any password; account id = login name.
// Consent is granted automatically (no consent page).
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const { OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI } = process.env;
if (!OIDC_PORT || !OIDC_CLIENT_ID || !OIDC_CLIENT_SECRET || !OIDC_REDIRECT_URI) {
  console.error('need OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${OIDC_PORT}`;
console.info = (...args) => console.error(...args); // keep stdout for "ready" only

// Fixed accounts: groups by login name, everybody else gets [].
const GROUPS = { ada: ['pki-admins'], olga: ['pki-operators'], vic: ['pki-viewers'] };
const findAccount = (ctx, id) => ({
  accountId: id,
  claims: () => ({
    sub: id,
    name: id,
    email: `${id}@example.test`,
    email_verified: true,
    groups: GROUPS[id] ?? [],
  }),
});

// Fresh signing key per run (avoids the library's insecure dev keys).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' };

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: OIDC_CLIENT_ID,
    client_secret: OIDC_CLIENT_SECRET,
    redirect_uris: [OIDC_REDIRECT_URI],
    // Streamlit's st.logout sends the user back to its redirect URI after the provider's logout.
    post_logout_redirect_uris: [OIDC_REDIRECT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post also accepted, see below
  }],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] }, // not `secure`: plain http
  findAccount,
  // "groups" is released with the profile scope AND with its own "groups" scope,
  // so both "openid profile email" and "openid profile email groups" yield it.
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'groups'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // put scope claims into the ID token, not only /userinfo
  pkce: { required: () => false }, // PKCE optional (still honoured when sent)
  features: {
    devInteractions: { enabled: false }, // own pages below
    rpInitiatedLogout: {
      enabled: true, // /session/end; auto-confirm instead of "Yes, sign me out" page
      logoutSource: (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body>${form}<script>
          var f = document.forms[0], i = document.createElement('input');
          i.type = 'hidden'; i.name = 'logout'; i.value = 'yes'; f.appendChild(i); f.submit();
          </script></body></html>`;
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Auto-consent: always grant whatever the (single, trusted) client requested.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const grant = (grantId && await ctx.oidc.provider.Grant.find(grantId))
      || new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
      });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const readForm = async (req) => {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
};

// Login page: GET shows form (fields "login", "password", button "Sign-in"),
// POST completes the login interaction and redirects back to the authorization flow.
provider.use(async (ctx, next) => {
  if (!/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  ctx.set('cache-control', 'no-store');
  const { uid, prompt, params, session } = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'POST') {
    const { login } = await readForm(ctx.req);
    const result = login ? { login: { accountId: login.trim() } } : {
      error: 'access_denied', error_description: 'no login name given',
    };
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: false,
    }));
    return;
  }
  if (prompt.name === 'consent') { // only with an explicit prompt=consent: grant it silently
    const grant = new provider.Grant({ clientId: params.client_id, accountId: session.accountId });
    grant.addOIDCScope(params.scope);
    grant.addOIDCClaims(prompt.details.missingOIDCClaims ?? []);
    const result = { consent: { grantId: await grant.save() } };
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result));
    return;
  }
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-in</title></head>
<body><h1>Sign-in</h1><p>prompt: ${esc(prompt.name)}, client: ${esc(params.client_id)}</p>
<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
  <input id="login" name="login" placeholder="login" required autofocus>
  <input id="password" name="password" type="password" placeholder="password">
  <button type="submit" id="submit">Sign-in</button>
</form></body></html>`;
});

const server = http.createServer(provider.callback());
server.listen(Number(OIDC_PORT), '127.0.0.1', () => console.log(`ready ${ISSUER}`));
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { server.close(); server.closeAllConnections(); process.exit(0); });
}
