// PostgREST edge cases through supabase-js: encoding, quoting, Prefer variants, errors,
// credentials. Spec: ../shared/docs/supabase-protocol.md §1, §3.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import {
  SUPABASE_ANON_KEY,
  SUPABASE_SERVICE_ROLE_KEY,
  SUPABASE_URL,
  fails,
  newClient,
  newUser,
  ok,
  sortedBy,
} from '../lib/helpers.js';

const T = 'conformance_notes';

function clientWithBearer(token) {
  return createClient(SUPABASE_URL, SUPABASE_ANON_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket },
    global: { headers: { Authorization: `Bearer ${token}` } },
  });
}

function hs256(payload, secret) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(payload)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

describe('rest edge: values and encoding', () => {
  let u;
  before(async () => {
    u = await newUser('edge');
  });

  test('special characters round-trip and filter exactly (eq and in)', async () => {
    const title = 'naïve ☃ "quoted" & a=b+c, (x) %_*\\ end';
    const tags = ['a,b', 'c"d', 'e f', 'NULL', '{x}', ''];
    const [row] = ok(await u.client.from(T).insert({ title, tags, body: 'line1\nline2\ttab' }).select(), 'insert');
    assert.equal(row.title, title);
    assert.deepEqual(row.tags, tags, 'text[] elements keep commas, quotes, braces, "NULL" and empty strings');
    assert.equal(row.body, 'line1\nline2\ttab');

    const eq = ok(await u.client.from(T).select('id').eq('title', title), 'eq special');
    assert.deepEqual(eq, [{ id: row.id }]);
    // in(): postgrest-js wraps values holding , ( ) in double quotes but does not escape " or \
    // inside them (neither would real PostgREST accept those), so this value has neither.
    const inTitle = 'in: naïve ☃ & a=b+c, (x) %_*. end';
    const [inRow] = ok(await u.client.from(T).insert({ title: inTitle }).select('id'), 'insert 2');
    const inn = ok(await u.client.from(T).select('id').in('title', [inTitle, 'other']), 'in special');
    assert.deepEqual(inn, [{ id: inRow.id }]);
  });

  test('bulk insert: keys missing in some objects become NULL; with defaultToNull: false they take the DEFAULT', async () => {
    const when = '2020-01-02T03:04:05+00:00';
    const nulls = ok(
      await u.client.from(T).insert([{ title: 'bulk-1', created_at: when }, { title: 'bulk-2' }]).select('title,created_at'),
      'bulk insert',
    ).sort((x, y) => x.title.localeCompare(y.title));
    assert.equal(Date.parse(nulls[0].created_at), Date.parse(when));
    assert.equal(nulls[1].created_at, null, 'missing key -> NULL (columns= param)');

    const defaults = ok(
      await u.client
        .from(T)
        .insert([{ title: 'bulk-3', created_at: when }, { title: 'bulk-4' }], { defaultToNull: false })
        .select('title,created_at'),
      'bulk insert missing=default',
    ).sort((x, y) => x.title.localeCompare(y.title));
    assert.equal(Date.parse(defaults[0].created_at), Date.parse(when));
    assert.ok(defaults[1].created_at, 'missing key -> DEFAULT now() (Prefer: missing=default)');
    assert.ok(Math.abs(Date.parse(defaults[1].created_at) - Date.now()) < 10 * 60 * 1000, defaults[1].created_at);
  });

  test('insert and update report counts with count: exact', async () => {
    const ins = await u.client.from(T).insert([{ title: 'cnt-1', score: 1 }, { title: 'cnt-2', score: 1 }], { count: 'exact' });
    assert.equal(ins.error, null, JSON.stringify(ins.error));
    assert.equal(ins.status, 201);
    assert.equal(ins.count, 2);
    const upd = await u.client.from(T).update({ score: 2 }, { count: 'exact' }).like('title', 'cnt-%');
    assert.equal(upd.error, null, JSON.stringify(upd.error));
    assert.equal(upd.count, 2);
  });

  test('jsonb and numeric columns: JSON values, ->/->> selects and ->> filters', async () => {
    const meta = { kind: 'alpha', n: 1, nested: { ok: true }, list: [1, 'x', null] };
    const [row] = ok(await u.client.from(T).insert({ title: 'json-1', meta, ratio: 1.5 }).select('meta,ratio'), 'insert');
    assert.deepEqual(row.meta, meta, 'jsonb is returned as JSON, not as a string');
    assert.equal(row.ratio, 1.5, 'numeric is returned as a JSON number');
    ok(await u.client.from(T).insert({ title: 'json-2', meta: { kind: 'beta', n: 2 } }), 'insert 2');

    const sel = ok(await u.client.from(T).select('kind:meta->>kind, n:meta->n, ok:meta->nested->ok').eq('title', 'json-1').single(), 'json select');
    assert.deepEqual(sel, { kind: 'alpha', n: 1, ok: true });
    const byKind = ok(await u.client.from(T).select('title').eq('meta->>kind', 'beta'), 'filter ->>');
    assert.deepEqual(byKind, [{ title: 'json-2' }]);
  });

  test('aliases and casts in select', async () => {
    ok(await u.client.from(T).insert({ title: 'alias-me', score: 42 }), 'insert');
    const row = ok(await u.client.from(T).select('t:title, s:score::text').eq('title', 'alias-me').single(), 'alias select');
    assert.deepEqual(row, { t: 'alias-me', s: '42' });
  });

  test('nested or/and, match() and filter()', async () => {
    ok(
      await u.client.from(T).insert([
        { title: 'n-a', score: 10 },
        { title: 'n-b', score: 20 },
        { title: 'n-c', score: 30 },
      ]),
      'insert',
    );
    const base = () => u.client.from(T).select('title').like('title', 'n-%');
    assert.deepEqual(sortedBy(ok(await base().or('and(score.gte.10,score.lte.20),title.eq.n-c'), 'or(and())')), ['n-a', 'n-b', 'n-c']);
    assert.deepEqual(sortedBy(ok(await base().or('and(score.gt.10,score.lt.30),title.eq.n-a'), 'or(and()) 2')), ['n-a', 'n-b']);
    assert.deepEqual(sortedBy(ok(await base().match({ title: 'n-b', score: 20 }), 'match')), ['n-b']);
    assert.deepEqual(sortedBy(ok(await base().filter('score', 'in', '(10,30)'), 'filter in')), ['n-a', 'n-c']);
  });

  test('range past the end with count: exact fails with PGRST103 (416)', async () => {
    ok(await u.client.from(T).insert([{ title: 'r-1' }, { title: 'r-2' }]), 'insert');
    const res = await u.client.from(T).select('title', { count: 'exact' }).like('title', 'r-%').range(10, 12);
    fails(res, { code: 'PGRST103', status: 416 }, 'range past the end');
  });

  test('upsert with ignoreDuplicates returns only the rows it inserted', async () => {
    ok(await u.client.from(T).insert({ title: 'ign-1', score: 1 }), 'insert');
    const res = await u.client
      .from(T)
      .upsert(
        [
          { user_id: u.user.id, title: 'ign-1', score: 100 },
          { user_id: u.user.id, title: 'ign-2', score: 2 },
        ],
        { onConflict: 'user_id,title', ignoreDuplicates: true },
      )
      .select('title,score');
    assert.deepEqual(ok(res, 'upsert ignore'), [{ title: 'ign-2', score: 2 }]);
    assert.deepEqual(ok(await u.client.from(T).select('score').eq('title', 'ign-1'), 'recheck'), [{ score: 1 }]);
  });

  test('rpc with get: true and with head: true + count', async () => {
    assert.equal(ok(await u.client.rpc('conformance_add', { a: 20, b: 22 }, { get: true }), 'rpc GET'), 42);
    const head = await u.client.rpc('conformance_series', { n: 7 }, { head: true, count: 'exact' });
    assert.equal(head.error, null, JSON.stringify(head.error));
    assert.equal(head.count, 7);
    assert.equal(head.data, null);
  });

  test('rpc RAISE with SQLSTATE PT402 answers HTTP 402', async () => {
    const err = fails(await u.client.rpc('conformance_fail_with', { state: 'PT402', msg: 'pay up' }), { code: 'PT402', status: 402 }, 'PT402');
    assert.equal(err.message, 'pay up');
  });

  test('rpc of a function with one unnamed jsonb parameter receives the whole body', async () => {
    const body = { a: 1, b: [2, 'three'], c: { d: null } };
    assert.deepEqual(ok(await u.client.rpc('conformance_echo', body), 'rpc echo'), body);
  });

  test('rpc of a void function answers 204 with no data', async () => {
    const res = await u.client.rpc('conformance_noop');
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.status, 204);
    assert.equal(res.data, null);
  });

  test('filters on timestamptz and uuid columns take typed literals', async () => {
    const [row] = ok(await u.client.from(T).insert({ title: 'typed', created_at: '2001-02-03T04:05:06Z' }).select('id,created_at'), 'insert');
    assert.equal(Date.parse(row.created_at), Date.parse('2001-02-03T04:05:06Z'));
    assert.match(row.created_at, /^2001-02-03T\d\d:05:06(\.\d+)?([+-]\d\d:\d\d|Z)$/, 'ISO 8601 with an offset');
    const since = ok(await u.client.from(T).select('id').eq('user_id', u.user.id).lt('created_at', '2001-02-04T00:00:00+00:00'), 'lt created_at');
    assert.deepEqual(since.map((r) => r.id), [row.id]);
  });

  test('delete().select().single() on two rows fails with PGRST116 and rolls back', async () => {
    ok(await u.client.from(T).insert([{ title: 'sd-1' }, { title: 'sd-2' }]), 'insert');
    const res = await u.client.from(T).delete().like('title', 'sd-%').select().single();
    fails(res, { code: 'PGRST116', status: 406 }, 'delete single on 2 rows');
    assert.deepEqual(sortedBy(ok(await u.client.from(T).select('title').like('title', 'sd-%'), 'recheck')), ['sd-1', 'sd-2'], 'nothing deleted');
  });

  test('update().select().single() on two rows fails with PGRST116 and rolls back; on one row returns an object', async () => {
    ok(await u.client.from(T).insert([{ title: 'su-1', score: 1 }, { title: 'su-2', score: 1 }]), 'insert');
    const res = await u.client.from(T).update({ score: 9 }).like('title', 'su-%').select().single();
    fails(res, { code: 'PGRST116', status: 406 }, 'update single on 2 rows');
    const rows = ok(await u.client.from(T).select('score').like('title', 'su-%'), 'recheck');
    assert.deepEqual(rows, [{ score: 1 }, { score: 1 }], 'nothing updated');
    const one = ok(await u.client.from(T).update({ score: 9 }).eq('title', 'su-1').select('title,score').single(), 'update single');
    assert.deepEqual(one, { title: 'su-1', score: 9 });
  });

  test('rpc with a missing argument fails with PGRST202 (404)', async () => {
    fails(await u.client.rpc('conformance_add', { a: 1 }), { code: 'PGRST202', status: 404 }, 'rpc add(a)');
  });
});

describe('rest edge: resources, schemas, credentials', () => {
  test('an unknown table fails with 404 (PGRST205, or 42P01 on PostgREST 12)', async () => {
    const res = await newClient().from('conformance_no_such_table').select('*');
    assert.ok(res.error, `expected an error, got ${JSON.stringify(res.data)}`);
    assert.ok(['PGRST205', '42P01'].includes(res.error.code), `code ${res.error.code}: ${res.error.message}`);
    assert.equal(res.status, 404);
  });

  test('an unknown schema fails with PGRST106 (406)', async () => {
    const res = await newClient().schema('conformance_no_such_schema').from(T).select('*');
    fails(res, { code: 'PGRST106', status: 406 }, 'unknown schema');
  });

  test('a garbage bearer token fails with PGRST301 (401)', async () => {
    const res = await clientWithBearer('not-a-jwt').from(T).select('*');
    fails(res, { code: 'PGRST301', status: 401 }, 'garbage bearer');
  });

  test('a JWT signed with another secret fails with PGRST301 (401)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const forged = hs256({ role: 'service_role', iat: now, exp: now + 600 }, 'not-the-project-secret-0123456789-0123456789');
    const res = await clientWithBearer(forged).from(T).select('*');
    fails(res, { code: 'PGRST301', status: 401 }, 'forged service_role JWT');
    assert.equal(res.data, null);
  });

  test('the service_role key bypasses RLS', async () => {
    const a = await newUser('svc-a');
    const [row] = ok(await a.client.from(T).insert({ title: 'svc-visible', score: 5 }).select('id'), 'insert');
    const svc = newClient(SUPABASE_SERVICE_ROLE_KEY);
    const rows = ok(await svc.from(T).select('id,user_id,title').eq('user_id', a.user.id), 'service select');
    assert.deepEqual(rows, [{ id: row.id, user_id: a.user.id, title: 'svc-visible' }]);
  });

  test('selects are capped at max_rows = 1000 (count still exact)', async () => {
    const u = await newUser('maxrows');
    const rows = Array.from({ length: 1001 }, (_, i) => ({ title: `m-${i}`, score: i }));
    ok(await u.client.from(T).insert(rows), 'bulk insert 1001');
    const res = await u.client.from(T).select('score', { count: 'exact' }).order('score');
    const data = ok(res, 'select all');
    assert.equal(res.count, 1001);
    assert.equal(data.length, 1000);
    assert.equal(data[999].score, 999);
  });
});
