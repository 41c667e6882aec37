// Shared helpers for the conformance tests: clients, fresh users, assertions.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set. The conformance suite runs against a running brightrun-stack: ` +
        'set SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY and DATABASE_URL ' +
        '(see conformance/README.md).',
    );
  }
  return value;
}

export const SUPABASE_URL = requireEnv('SUPABASE_URL');
export const SUPABASE_ANON_KEY = requireEnv('SUPABASE_ANON_KEY');
export const SUPABASE_SERVICE_ROLE_KEY = requireEnv('SUPABASE_SERVICE_ROLE_KEY');
export const DATABASE_URL = requireEnv('DATABASE_URL');

export const PASSWORD = 'conformance-Passw0rd!';

/** A supabase-js client as an app would create it, with in-memory session only. */
export function newClient(key = SUPABASE_ANON_KEY) {
  return createClient(SUPABASE_URL, key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    // Node 20 has no global WebSocket; supabase-js >= 2.100 throws at createClient without one.
    realtime: { transport: WebSocket },
  });
}

/** A unique, never-used email address. */
export function uniqueEmail(label = 'user') {
  return `conf-${label}-${randomUUID()}@example.com`;
}

/** Signs up a fresh user on a new client; the client then carries that user's session. */
export async function newUser(label = 'user') {
  const client = newClient();
  const email = uniqueEmail(label);
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD });
  if (error) assert.fail(`signUp(${email}) failed: ${describe(error)}`);
  assert.ok(data.session, `signUp(${email}) returned no session (is autoconfirm on?)`);
  assert.ok(data.user?.id, `signUp(${email}) returned no user id`);
  return { client, email, password: PASSWORD, user: data.user, session: data.session };
}

/** Decodes the payload of a JWT (no verification). */
export function jwtPayload(token) {
  const parts = token.split('.');
  assert.equal(parts.length, 3, `not a JWT: ${token}`);
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

export function describe(error) {
  if (error == null) return String(error);
  const fields = {};
  for (const k of ['name', 'message', 'code', 'status', 'details', 'hint']) {
    if (error[k] !== undefined) fields[k] = error[k];
  }
  return JSON.stringify(fields);
}

/**
 * Asserts that a supabase-js result has no error and returns its data. The failure message
 * carries the error body and HTTP status, so a failing test explains itself.
 */
export function ok(result, what) {
  if (result.error != null) {
    const status = result.status ?? result.error.status;
    assert.fail(`${what}: expected success, got HTTP ${status} error ${describe(result.error)}`);
  }
  return result.data;
}

/** Asserts that a supabase-js result failed with the given code (and status, if given). */
export function fails(result, { code, status }, what) {
  if (result.error == null) {
    assert.fail(
      `${what}: expected error ${code}, got success (HTTP ${result.status}) with data ${JSON.stringify(result.data)}`,
    );
  }
  assert.equal(result.error.code, code, `${what}: error code; error was ${describe(result.error)}`);
  if (status !== undefined) {
    const got = result.status ?? result.error.status;
    assert.equal(got, status, `${what}: HTTP status; error was ${describe(result.error)}`);
  }
  return result.error;
}

/** Sorted list of `key` values of rows, for order-independent comparisons. */
export function sortedBy(rows, key = 'title') {
  assert.ok(Array.isArray(rows), `expected an array of rows, got ${JSON.stringify(rows)}`);
  return rows.map((r) => r[key]).sort();
}
