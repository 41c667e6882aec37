// PostgREST (/rest/v1) through the official supabase-js client (postgrest-js), as signed-in
// users, against public.conformance_notes from conformance/fixtures.sql.
// Spec: ../shared/docs/supabase-protocol.md §3.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fails, newClient, newUser, ok, sortedBy } from '../lib/helpers.js';

const T = 'conformance_notes';

const SEED = [
  { title: 'alpha', body: 'First note', score: 10, tags: ['x', 'y'] },
  { title: 'beta', body: 'second NOTE', score: 20, tags: ['y'] },
  { title: 'gamma', body: null, score: 30, tags: [] },
  { title: 'delta', body: 'fourth', score: null, tags: null },
  { title: 'epsilon, with (comma)', body: 'fifth', score: 50, tags: ['z'] },
];
const EPS = 'epsilon, with (comma)';

describe('rest: reads as user A over seeded rows', () => {
  let a;
  let seeded;

  before(async () => {
    a = await newUser('rest-a');
    const res = await a.client.from(T).insert(SEED).select();
    seeded = ok(res, 'seed insert');
  });

  test('insert with .select() returns the inserted rows (201)', () => {
    assert.equal(seeded.length, SEED.length);
    for (const row of seeded) {
      assert.equal(row.user_id, a.user.id, 'user_id defaults to auth.uid()');
      assert.equal(typeof row.id, 'number');
      assert.ok(row.created_at, 'created_at default');
    }
    const byTitle = Object.fromEntries(seeded.map((r) => [r.title, r]));
    assert.deepEqual(byTitle.alpha.tags, ['x', 'y']);
    assert.equal(byTitle.gamma.body, null);
    assert.deepEqual(byTitle.gamma.tags, []);
    assert.equal(byTitle.delta.score, null);
    assert.equal(byTitle.delta.tags, null);
  });

  test('insert status is 201; without .select() no body is returned', async () => {
    const res = await a.client.from(T).insert({ title: 'no-return', score: -1 });
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.status, 201);
    assert.equal(res.data, null);
    const del = await a.client.from(T).delete().eq('title', 'no-return').select('title');
    assert.deepEqual(ok(del, 'cleanup'), [{ title: 'no-return' }]);
  });

  test('select * returns all own rows (200) with typed JSON values', async () => {
    const res = await a.client.from(T).select('*');
    const rows = ok(res, 'select *');
    assert.equal(res.status, 200);
    assert.deepEqual(sortedBy(rows), SEED.map((r) => r.title).sort());
    const alpha = rows.find((r) => r.title === 'alpha');
    assert.deepEqual(Object.keys(alpha).sort(), ['body', 'created_at', 'id', 'meta', 'ratio', 'score', 'tags', 'title', 'user_id']);
    assert.equal(alpha.score, 10);
  });

  test('select with a column list returns only those columns', async () => {
    const rows = ok(await a.client.from(T).select('title,score').eq('title', 'beta'), 'select cols');
    assert.deepEqual(rows, [{ title: 'beta', score: 20 }]);
  });

  const filterCases = [
    ['eq', (q) => q.eq('score', 20), ['beta']],
    ['neq (NULL is not <> 20)', (q) => q.neq('score', 20), ['alpha', EPS, 'gamma']],
    ['gt', (q) => q.gt('score', 20), [EPS, 'gamma']],
    ['gte', (q) => q.gte('score', 20), ['beta', EPS, 'gamma']],
    ['lt', (q) => q.lt('score', 20), ['alpha']],
    ['lte', (q) => q.lte('score', 20), ['alpha', 'beta']],
    ['like (case-sensitive, % wildcard)', (q) => q.like('body', '%NOTE%'), ['beta']],
    ['like (* wildcard)', (q) => q.like('body', '*ou*'), ['delta']],
    ['ilike', (q) => q.ilike('body', '%note%'), ['alpha', 'beta']],
    ['is null', (q) => q.is('score', null), ['delta']],
    ['is null on text', (q) => q.is('body', null), ['gamma']],
    ['in (with a quoted value containing , and parentheses)', (q) => q.in('title', ['alpha', EPS, 'missing']), ['alpha', EPS]],
    ['in on integers', (q) => q.in('score', [10, 30, 99]), ['alpha', 'gamma']],
    ['not is null', (q) => q.not('score', 'is', null), ['alpha', 'beta', EPS, 'gamma']],
    ['not in', (q) => q.not('title', 'in', '(alpha,beta)'), ['delta', EPS, 'gamma']],
    ['not eq', (q) => q.not('score', 'eq', 10), ['beta', EPS, 'gamma']],
    ['or', (q) => q.or('score.gte.50,title.eq.alpha'), ['alpha', EPS]],
    ['or with is.null', (q) => q.or('score.is.null,score.eq.20'), ['beta', 'delta']],
    ['several filters are ANDed', (q) => q.gte('score', 10).lt('score', 50).neq('title', 'beta'), ['alpha', 'gamma']],
    ['a filter value with dots', (q) => q.eq('body', 'a.b.c'), []],
  ];
  for (const [name, apply, expected] of filterCases) {
    test(`filter: ${name}`, async () => {
      const rows = ok(await apply(a.client.from(T).select('title')), name);
      assert.deepEqual(sortedBy(rows), [...expected].sort());
    });
  }

  test('a filter on a bad value fails with 22P02 (400)', async () => {
    const res = await a.client.from(T).select('title').eq('score', 'not-a-number');
    fails(res, { code: '22P02', status: 400 }, 'eq score=not-a-number');
  });

  test('order ascending (NULLs last by default)', async () => {
    const rows = ok(await a.client.from(T).select('title').order('score', { ascending: true }), 'order asc');
    assert.deepEqual(rows.map((r) => r.title), ['alpha', 'beta', 'gamma', EPS, 'delta']);
  });

  test('order descending (NULLs first by default)', async () => {
    const rows = ok(await a.client.from(T).select('title').order('score', { ascending: false }), 'order desc');
    assert.deepEqual(rows.map((r) => r.title), ['delta', EPS, 'gamma', 'beta', 'alpha']);
  });

  test('order ascending with nullsFirst', async () => {
    const rows = ok(await a.client.from(T).select('title').order('score', { ascending: true, nullsFirst: true }), 'asc nullsfirst');
    assert.deepEqual(rows.map((r) => r.title), ['delta', 'alpha', 'beta', 'gamma', EPS]);
  });

  test('order descending with nullsFirst: false', async () => {
    const rows = ok(await a.client.from(T).select('title').order('score', { ascending: false, nullsFirst: false }), 'desc nullslast');
    assert.deepEqual(rows.map((r) => r.title), [EPS, 'gamma', 'beta', 'alpha', 'delta']);
  });

  test('order by two columns (second key breaks ties)', async () => {
    // All rows share user_id, so the second key decides the order.
    const rows = ok(
      await a.client.from(T).select('title').order('user_id').order('title', { ascending: false }),
      'two orders',
    );
    assert.deepEqual(rows.map((r) => r.title), ['gamma', EPS, 'delta', 'beta', 'alpha']);
  });

  test("range() with count: 'exact' returns the window and the total (206)", async () => {
    const res = await a.client.from(T).select('title', { count: 'exact' }).order('title').range(1, 2);
    const rows = ok(res, 'range');
    assert.equal(res.count, 5);
    assert.equal(rows.length, 2);
    assert.deepEqual(rows.map((r) => r.title), ['beta', 'delta']);
    assert.equal(res.status, 206);
  });

  test("range() covering everything with count: 'exact' is 200", async () => {
    const res = await a.client.from(T).select('title', { count: 'exact' }).order('title').range(0, 9);
    assert.equal(ok(res, 'range all').length, 5);
    assert.equal(res.count, 5);
    assert.equal(res.status, 200);
  });

  test('limit() returns at most N rows', async () => {
    const rows = ok(await a.client.from(T).select('title').order('title', { ascending: false }).limit(2), 'limit');
    assert.deepEqual(rows.map((r) => r.title), ['gamma', EPS]);
  });

  test("head: true with count: 'exact' returns only the count", async () => {
    const res = await a.client.from(T).select('*', { count: 'exact', head: true });
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.count, 5);
    assert.equal(res.data, null);
    const filtered = await a.client.from(T).select('*', { count: 'exact', head: true }).gt('score', 15);
    assert.equal(filtered.error, null, JSON.stringify(filtered.error));
    assert.equal(filtered.count, 3);
  });

  test('single() on exactly one row returns an object', async () => {
    const res = await a.client.from(T).select('title,score,tags').eq('title', 'alpha').single();
    const row = ok(res, 'single');
    assert.ok(!Array.isArray(row), 'an object, not an array');
    assert.deepEqual(row, { title: 'alpha', score: 10, tags: ['x', 'y'] });
  });

  test('single() on zero rows fails with PGRST116 (406)', async () => {
    const res = await a.client.from(T).select('*').eq('title', 'nope').single();
    fails(res, { code: 'PGRST116', status: 406 }, 'single on zero rows');
    assert.equal(res.data, null);
  });

  test('single() on several rows fails with PGRST116 (406)', async () => {
    const res = await a.client.from(T).select('*').gt('score', 10).single();
    const err = fails(res, { code: 'PGRST116', status: 406 }, 'single on several rows');
    assert.match(err.details ?? '', /3 rows/);
  });

  test('maybeSingle() on zero rows returns null without error', async () => {
    const res = await a.client.from(T).select('*').eq('title', 'nope').maybeSingle();
    assert.equal(res.error, null, JSON.stringify(res.error));
    assert.equal(res.data, null);
    const one = ok(await a.client.from(T).select('title').eq('title', 'beta').maybeSingle(), 'maybeSingle one');
    assert.deepEqual(one, { title: 'beta' });
  });

  test('duplicate (user_id, title) fails with 23505 (409)', async () => {
    const res = await a.client.from(T).insert({ title: 'alpha', score: 1 }).select();
    const err = fails(res, { code: '23505', status: 409 }, 'duplicate insert');
    assert.match(err.message, /duplicate key value violates unique constraint/);
    const rows = ok(await a.client.from(T).select('score').eq('title', 'alpha'), 'recheck');
    assert.deepEqual(rows, [{ score: 10 }], 'nothing changed');
  });

  test('an unknown column fails with PGRST204 (400)', async () => {
    const res = await a.client.from(T).insert({ title: 'x', no_such_column: 1 });
    fails(res, { code: 'PGRST204', status: 400 }, 'unknown column');
  });
});

describe('rest: writes', () => {
  test('update().eq().select() returns the updated rows and persists them', async () => {
    const u = await newUser('rest-update');
    ok(await u.client.from(T).insert([{ title: 'u1', score: 1 }, { title: 'u2', score: 2 }]), 'insert');
    const res = await u.client.from(T).update({ score: 11, body: 'changed' }).eq('title', 'u1').select('title,score,body');
    assert.deepEqual(ok(res, 'update'), [{ title: 'u1', score: 11, body: 'changed' }]);
    assert.equal(res.status, 200);
    const rows = ok(await u.client.from(T).select('title,score').order('title'), 'after');
    assert.deepEqual(rows, [{ title: 'u1', score: 11 }, { title: 'u2', score: 2 }]);

    // No match: empty list, not an error.
    assert.deepEqual(ok(await u.client.from(T).update({ score: 0 }).eq('title', 'none').select(), 'update none'), []);

    // Without .select(): 204, no body.
    const plain = await u.client.from(T).update({ score: 22 }).eq('title', 'u2');
    assert.equal(plain.error, null, JSON.stringify(plain.error));
    assert.equal(plain.status, 204);
    assert.equal(plain.data, null);
    assert.deepEqual(ok(await u.client.from(T).select('score').eq('title', 'u2'), 'u2'), [{ score: 22 }]);
  });

  test('delete().eq().select() returns the deleted rows and removes them', async () => {
    const u = await newUser('rest-delete');
    ok(await u.client.from(T).insert([{ title: 'd1', score: 1 }, { title: 'd2', score: 2 }]), 'insert');
    const res = await u.client.from(T).delete().eq('title', 'd1').select('title,score');
    assert.deepEqual(ok(res, 'delete'), [{ title: 'd1', score: 1 }]);
    const rows = ok(await u.client.from(T).select('title'), 'after');
    assert.deepEqual(rows, [{ title: 'd2' }]);

    const plain = await u.client.from(T).delete().eq('title', 'd2');
    assert.equal(plain.error, null, JSON.stringify(plain.error));
    assert.equal(plain.status, 204);
    assert.deepEqual(ok(await u.client.from(T).select('title'), 'after 2'), []);
  });

  test('upsert with onConflict updates the existing row', async () => {
    const u = await newUser('rest-upsert');
    const [orig] = ok(await u.client.from(T).insert({ title: 'up', score: 1, body: 'v1' }).select(), 'insert');
    const res = await u.client
      .from(T)
      .upsert({ user_id: u.user.id, title: 'up', score: 2, body: 'v2' }, { onConflict: 'user_id,title' })
      .select();
    const rows = ok(res, 'upsert existing');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].id, orig.id, 'same row, not a new one');
    assert.equal(rows[0].score, 2);
    assert.equal(rows[0].body, 'v2');

    // A new key is inserted.
    const ins = ok(
      await u.client.from(T).upsert({ user_id: u.user.id, title: 'up2', score: 3 }, { onConflict: 'user_id,title' }).select(),
      'upsert new',
    );
    assert.equal(ins.length, 1);
    assert.notEqual(ins[0].id, orig.id);

    // ignoreDuplicates leaves the existing row alone.
    ok(
      await u.client.from(T).upsert({ user_id: u.user.id, title: 'up', score: 99 }, { onConflict: 'user_id,title', ignoreDuplicates: true }),
      'upsert ignore',
    );
    const all = ok(await u.client.from(T).select('title,score').order('title'), 'after');
    assert.deepEqual(all, [{ title: 'up', score: 2 }, { title: 'up2', score: 3 }]);
  });
});

describe('rest: rpc', () => {
  let u;
  before(async () => {
    u = await newUser('rest-rpc');
  });

  test('rpc scalar function returns a JSON scalar', async () => {
    const res = await u.client.rpc('conformance_add', { a: 2, b: 3 });
    assert.equal(ok(res, 'rpc add'), 5);
    assert.equal(res.status, 200);
  });

  test('rpc sees the JWT claims: auth.uid() is the caller', async () => {
    assert.equal(ok(await u.client.rpc('conformance_whoami'), 'rpc whoami'), u.user.id);
    assert.equal(ok(await newClient().rpc('conformance_whoami'), 'rpc whoami anon'), null);
  });

  test('rpc set-returning function with filters and order', async () => {
    const all = ok(await u.client.rpc('conformance_series', { n: 5 }), 'series');
    assert.equal(all.length, 5);
    assert.deepEqual(all[0], { i: 1, label: 'item-1' });
    const res = await u.client.rpc('conformance_series', { n: 5 }).gte('i', 3).order('i', { ascending: false });
    assert.deepEqual(ok(res, 'series filtered'), [
      { i: 5, label: 'item-5' },
      { i: 4, label: 'item-4' },
      { i: 3, label: 'item-3' },
    ]);
    const one = ok(await u.client.rpc('conformance_series', { n: 5 }).eq('label', 'item-2').single(), 'series single');
    assert.deepEqual(one, { i: 2, label: 'item-2' });
  });

  test('rpc of a raising function fails with P0001 and the message (400)', async () => {
    const res = await u.client.rpc('conformance_fail', { msg: 'conformance boom' });
    const err = fails(res, { code: 'P0001', status: 400 }, 'rpc fail');
    assert.equal(err.message, 'conformance boom');
    assert.equal(err.details, 'conformance detail');
    assert.equal(err.hint, 'conformance hint');
  });

  test('rpc of an unknown function fails with PGRST202 (404)', async () => {
    const res = await u.client.rpc('conformance_no_such_function', { a: 1 });
    fails(res, { code: 'PGRST202', status: 404 }, 'rpc unknown');
  });
});

describe('rest: row-level security between users', () => {
  let a;
  let b;
  let aRow;
  before(async () => {
    a = await newUser('rls-a');
    b = await newUser('rls-b');
    [aRow] = ok(await a.client.from(T).insert({ title: 'secret', body: 'A only', score: 7 }).select(), 'A insert');
  });

  test("B cannot see A's rows", async () => {
    assert.deepEqual(ok(await b.client.from(T).select('*'), 'B select all'), []);
    assert.deepEqual(ok(await b.client.from(T).select('*').eq('id', aRow.id), 'B select by id'), []);
    const head = await b.client.from(T).select('*', { count: 'exact', head: true });
    assert.equal(head.count, 0);
    // A still sees it.
    assert.deepEqual(ok(await a.client.from(T).select('id').eq('id', aRow.id), 'A select'), [{ id: aRow.id }]);
  });

  test("B cannot update or delete A's rows (silently 0 rows)", async () => {
    assert.deepEqual(ok(await b.client.from(T).update({ body: 'hacked' }).eq('id', aRow.id).select(), 'B update'), []);
    assert.deepEqual(ok(await b.client.from(T).delete().eq('id', aRow.id).select(), 'B delete'), []);
    const rows = ok(await a.client.from(T).select('body').eq('id', aRow.id), 'A recheck');
    assert.deepEqual(rows, [{ body: 'A only' }]);
  });

  test("B inserting a row with A's user_id fails with 42501 (403)", async () => {
    const res = await b.client.from(T).insert({ user_id: a.user.id, title: 'forged' }).select();
    const err = fails(res, { code: '42501', status: 403 }, 'forged insert');
    assert.match(err.message, /row-level security/);
    assert.deepEqual(ok(await a.client.from(T).select('title').eq('title', 'forged'), 'A check'), []);
  });

  test('B can use the same title as A (unique per user)', async () => {
    const rows = ok(await b.client.from(T).insert({ title: 'secret', body: 'B' }).select('title,user_id'), 'B insert');
    assert.deepEqual(rows, [{ title: 'secret', user_id: b.user.id }]);
  });

  test('the anon client sees nothing', async () => {
    const anon = newClient();
    const res = await anon.from(T).select('*');
    assert.deepEqual(ok(res, 'anon select'), []);
    assert.equal(res.status, 200);
    const count = await anon.from(T).select('*', { count: 'exact', head: true });
    assert.equal(count.error, null, JSON.stringify(count.error));
    assert.equal(count.count, 0);
  });

  test('the anon client cannot insert (42501, 401)', async () => {
    const res = await newClient().from(T).insert({ user_id: a.user.id, title: 'anon' });
    fails(res, { code: '42501', status: 401 }, 'anon insert');
  });
});
