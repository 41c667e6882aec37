// Auth (/auth/v1) through the official supabase-js client (auth-js).
// Spec: ../shared/docs/supabase-protocol.md §2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthApiError, AuthWeakPasswordError, isAuthError } from '@supabase/supabase-js';
import { PASSWORD, SUPABASE_ANON_KEY, fails, jwtPayload, newClient, newUser, ok, uniqueEmail } from '../lib/helpers.js';

test('auth: signUp with autoconfirm returns a session and a user', async () => {
  const client = newClient();
  const email = uniqueEmail('signup');
  const data = ok(await client.auth.signUp({ email, password: PASSWORD, options: { data: { display_name: 'Conf' } } }), 'signUp');

  assert.ok(data.user, 'user returned');
  assert.equal(data.user.email, email);
  assert.equal(data.user.aud, 'authenticated');
  assert.equal(data.user.role, 'authenticated');
  assert.match(data.user.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(data.user.user_metadata.display_name, 'Conf', 'options.data is stored as user_metadata');
  assert.equal(data.user.app_metadata.provider, 'email');

  const s = data.session;
  assert.ok(s, 'session returned (autoconfirm)');
  assert.equal(s.token_type, 'bearer');
  assert.ok(s.expires_in > 3000 && s.expires_in <= 3600, `expires_in ${s.expires_in}`);
  assert.ok(Math.abs(s.expires_at - (Math.floor(Date.now() / 1000) + 3600)) < 60, `expires_at ${s.expires_at}`);
  assert.ok(s.refresh_token.length >= 12, 'refresh token');
  assert.equal(s.user.id, data.user.id);

  const claims = jwtPayload(s.access_token);
  assert.equal(claims.sub, data.user.id);
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.aud, 'authenticated');
  assert.equal(claims.email, email);
  assert.equal(claims.exp - claims.iat, 3600);
  assert.equal(typeof claims.session_id, 'string');
  assert.equal(claims.is_anonymous, false);
  assert.equal(claims.aal, 'aal1');

  // The client now holds that session.
  const { data: current } = await client.auth.getSession();
  assert.equal(current.session?.access_token, s.access_token);
});

test('auth: signUp lowercases the email', async () => {
  const client = newClient();
  const email = uniqueEmail('MiXeD').replace('conf-', 'Conf-');
  const data = ok(await client.auth.signUp({ email, password: PASSWORD }), 'signUp');
  assert.equal(data.user.email, email.toLowerCase());
  // and signing in with the original casing works
  const signIn = ok(await newClient().auth.signInWithPassword({ email, password: PASSWORD }), 'signIn');
  assert.equal(signIn.user.id, data.user.id);
});

test('auth: signInWithPassword returns a new session for the user', async () => {
  const u = await newUser('signin');
  const client = newClient();
  const data = ok(await client.auth.signInWithPassword({ email: u.email, password: u.password }), 'signInWithPassword');
  assert.equal(data.user.id, u.user.id);
  assert.equal(data.user.email, u.email);
  assert.ok(data.user.last_sign_in_at, 'last_sign_in_at set');
  assert.ok(data.session.access_token);
  assert.notEqual(data.session.refresh_token, u.session.refresh_token, 'a new refresh token');
  const claims = jwtPayload(data.session.access_token);
  assert.equal(claims.sub, u.user.id);
  assert.notEqual(claims.session_id, jwtPayload(u.session.access_token).session_id, 'a new session');
  assert.equal(claims.amr?.[0]?.method, 'password');
});

test('auth: wrong password fails with invalid_credentials (400)', async () => {
  const u = await newUser('wrongpw');
  const client = newClient();
  const res = await client.auth.signInWithPassword({ email: u.email, password: 'not-the-password' });
  const err = fails(res, { code: 'invalid_credentials', status: 400 }, 'wrong password');
  assert.ok(err instanceof AuthApiError, `AuthApiError, got ${err.name}`);
  assert.equal(err.message, 'Invalid login credentials');
  assert.equal(res.data.session, null);
  assert.equal(res.data.user, null);

  // An unknown email gives the same answer (no user enumeration).
  const unknown = await client.auth.signInWithPassword({ email: uniqueEmail('nobody'), password: PASSWORD });
  fails(unknown, { code: 'invalid_credentials', status: 400 }, 'unknown email');
});

test('auth: refreshSession returns new tokens and replaces the refresh token', async () => {
  const u = await newUser('refresh');
  const old = u.session;
  const data = ok(await u.client.auth.refreshSession(), 'refreshSession');
  assert.ok(data.session, 'session returned');
  assert.notEqual(data.session.refresh_token, old.refresh_token, 'refresh token rotated');
  assert.equal(data.user.id, u.user.id);
  const oldClaims = jwtPayload(old.access_token);
  const claims = jwtPayload(data.session.access_token);
  assert.equal(claims.sub, u.user.id);
  assert.equal(claims.session_id, oldClaims.session_id, 'same session');
  assert.ok(claims.iat >= oldClaims.iat);

  // The client stores the new session.
  const { data: current } = await u.client.auth.getSession();
  assert.equal(current.session.refresh_token, data.session.refresh_token);

  // The new refresh token works in turn and is rotated again.
  const again = ok(await newClient().auth.refreshSession({ refresh_token: data.session.refresh_token }), 'refresh new token');
  assert.notEqual(again.session.refresh_token, data.session.refresh_token);
  assert.notEqual(again.session.refresh_token, old.refresh_token);
});

test('auth: re-presenting the just-replaced refresh token returns the active token (no new one)', async () => {
  // GoTrue token_refresh rule 5a: a revoked token that is the parent of the session's newest
  // active token gets that active token back, so a client that lost a response recovers.
  const u = await newUser('refresh-parent');
  const old = u.session.refresh_token;
  const first = ok(await u.client.auth.refreshSession(), 'first refresh');
  const replay = ok(await newClient().auth.refreshSession({ refresh_token: old }), 'replay of old token');
  assert.equal(replay.session.refresh_token, first.session.refresh_token);
});

test('auth: getUser returns the signed-in user', async () => {
  const u = await newUser('getuser');
  const data = ok(await u.client.auth.getUser(), 'getUser');
  assert.equal(data.user.id, u.user.id);
  assert.equal(data.user.email, u.email);
  assert.equal(data.user.aud, 'authenticated');
  assert.equal(data.user.role, 'authenticated');
  assert.ok(data.user.email_confirmed_at, 'autoconfirmed user has email_confirmed_at');
  assert.deepEqual(data.user.app_metadata.providers, ['email']);
  assert.equal(data.user.identities?.length, 1, 'one identity');
  assert.equal(data.user.identities[0].provider, 'email');
  assert.equal(data.user.identities[0].user_id, u.user.id);

  // With an explicit JWT on a client that has no session.
  const explicit = ok(await newClient().auth.getUser(u.session.access_token), 'getUser(jwt)');
  assert.equal(explicit.user.id, u.user.id);

  // Without any session: AuthSessionMissingError from the client, no request needed.
  const none = await newClient().auth.getUser();
  assert.ok(isAuthError(none.error));
  assert.equal(none.data.user, null);

  // A tampered token is rejected by the server.
  const tampered = u.session.access_token.slice(0, -4) + (u.session.access_token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  const bad = await newClient().auth.getUser(tampered);
  fails(bad, { code: 'bad_jwt', status: 403 }, 'getUser(tampered jwt)');
});

test('auth: signOut ends the session: the old refresh token no longer refreshes', async () => {
  const u = await newUser('signout');
  const { refresh_token, access_token } = u.session;
  const out = await u.client.auth.signOut();
  assert.equal(out.error, null, `signOut: ${out.error?.message}`);
  const { data: local } = await u.client.auth.getSession();
  assert.equal(local.session, null, 'local session cleared');

  const res = await newClient().auth.refreshSession({ refresh_token });
  fails(res, { code: 'refresh_token_not_found', status: 400 }, 'refresh after signOut');
  assert.equal(res.data.session, null);

  // GoTrue checks the session row on /user: the old access token is refused (403 session_not_found,
  // surfaced by auth-js as AuthSessionMissingError).
  const user = await newClient().auth.getUser(access_token);
  assert.ok(user.error, 'getUser with a signed-out token fails');
  assert.equal(user.error.name, 'AuthSessionMissingError', `got ${user.error.name}: ${user.error.message}`);
  assert.equal(user.data.user, null);

  // Signing in again still works.
  ok(await newClient().auth.signInWithPassword({ email: u.email, password: u.password }), 'sign in again');
});

test('auth: signUp of an existing email fails with user_already_exists', async () => {
  const u = await newUser('dup');
  const res = await newClient().auth.signUp({ email: u.email, password: 'another-Passw0rd!' });
  const err = fails(res, { code: 'user_already_exists', status: 422 }, 'duplicate signUp');
  assert.equal(err.message, 'User already registered');
  assert.equal(res.data.session, null);
  // The original password still works; the second one does not.
  ok(await newClient().auth.signInWithPassword({ email: u.email, password: u.password }), 'original password');
  fails(
    await newClient().auth.signInWithPassword({ email: u.email, password: 'another-Passw0rd!' }),
    { code: 'invalid_credentials', status: 400 },
    'second password',
  );
});

test('auth: a weak password fails with weak_password', async () => {
  const client = newClient();
  const email = uniqueEmail('weak');
  const res = await client.auth.signUp({ email, password: '12345' });
  const err = fails(res, { code: 'weak_password', status: 422 }, 'weak password signUp');
  assert.ok(err instanceof AuthWeakPasswordError, `AuthWeakPasswordError, got ${err.name}`);
  assert.ok(err.reasons.includes('length'), `reasons ${JSON.stringify(err.reasons)}`);
  assert.equal(res.data.session, null);
  // No user was created: signing up with a good password now succeeds.
  ok(await client.auth.signUp({ email, password: PASSWORD }), 'signUp with a good password');
});

test('auth: signOut scope "others" keeps the current session and ends the others', async () => {
  const u = await newUser('scope-others');
  const second = newClient();
  const s2 = ok(await second.auth.signInWithPassword({ email: u.email, password: u.password }), 'second sign-in').session;

  const out = await u.client.auth.signOut({ scope: 'others' });
  assert.equal(out.error, null, `signOut others: ${out.error?.message}`);

  fails(await newClient().auth.refreshSession({ refresh_token: s2.refresh_token }), { code: 'refresh_token_not_found', status: 400 }, 'refresh of the other session');
  // The current session survives and still refreshes.
  const { data: local } = await u.client.auth.getSession();
  assert.ok(local.session, 'the current session is kept locally');
  ok(await u.client.auth.refreshSession(), 'refresh of the current session');
  ok(await u.client.auth.getUser(), 'getUser on the current session');
});

test('auth: signOut scope "local" ends only the current session', async () => {
  const u = await newUser('scope-local');
  const second = newClient();
  const s2 = ok(await second.auth.signInWithPassword({ email: u.email, password: u.password }), 'second sign-in').session;
  const { refresh_token } = u.session;

  const out = await u.client.auth.signOut({ scope: 'local' });
  assert.equal(out.error, null, `signOut local: ${out.error?.message}`);

  fails(await newClient().auth.refreshSession({ refresh_token }), { code: 'refresh_token_not_found', status: 400 }, 'refresh of the signed-out session');
  const other = ok(await newClient().auth.refreshSession({ refresh_token: s2.refresh_token }), 'refresh of the other session');
  assert.equal(other.user.id, u.user.id);
});

test('auth: malformed and unknown refresh tokens are refused', async () => {
  fails(await newClient().auth.refreshSession({ refresh_token: 'abc' }), { code: 'validation_failed', status: 400 }, 'refresh "abc"');
  fails(
    await newClient().auth.refreshSession({ refresh_token: 'abcdefgh2345' }),
    { code: 'refresh_token_not_found', status: 400 },
    'refresh of an unknown 12-char token',
  );
});

test('auth: getUser with the anon key as bearer is refused (bad_jwt, 403)', async () => {
  const res = await newClient().auth.getUser(SUPABASE_ANON_KEY);
  fails(res, { code: 'bad_jwt', status: 403 }, 'getUser(anon key)');
  assert.equal(res.data.user, null);
});

test('auth: signUp with an invalid email fails with validation_failed (400)', async () => {
  const res = await newClient().auth.signUp({ email: 'not-an-email', password: PASSWORD });
  fails(res, { code: 'validation_failed', status: 400 }, 'signUp(not-an-email)');
  assert.equal(res.data.user, null);
});

test('auth: two concurrent refreshes of the same refresh token both succeed', async () => {
  // GoTrue rules 5a/5b: a client racing itself (two tabs, parallel requests) is not reuse.
  const u = await newUser('race');
  const { refresh_token } = u.session;
  const [r1, r2] = await Promise.all([
    newClient().auth.refreshSession({ refresh_token }),
    newClient().auth.refreshSession({ refresh_token }),
  ]);
  ok(r1, 'first concurrent refresh');
  ok(r2, 'second concurrent refresh');
  assert.equal(r1.data.user.id, u.user.id);
  assert.equal(r2.data.user.id, u.user.id);
});
