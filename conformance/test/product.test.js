// Smoke test of the real product schema (migrations/*.sql) through supabase-js: the stack applies
// migrations/ at start. A missing function or table fails the test with a clear message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe as describeError, fails, newUser, ok } from '../lib/helpers.js';

function failIfMissing(res, what) {
  if (res.error && ['PGRST202', 'PGRST205', '42P01', '42883'].includes(res.error.code)) {
    assert.fail(
      `${what} is missing from the stack's schema (${describeError(res.error)}): ` +
        'are the migrations in migrations/ applied by brightrun-stack?',
    );
  }
}

async function createDataset(u, fileName = 'train.jsonl') {
  const res = await u.client.rpc('create_dataset', {
    name: 'Conformance dataset',
    file_name: fileName,
    file_size: 1234,
    description: 'from the supabase-js conformance suite',
  });
  failIfMissing(res, 'public.create_dataset(name, file_name, file_size, description)');
  return ok(res, 'rpc create_dataset');
}

test("product: rpc('create_dataset') returns a dataset whose storage path is under the user's folder", async () => {
  const u = await newUser('product-create');
  const ds = await createDataset(u);
  assert.equal(typeof ds, 'object', `a dataset row, got ${JSON.stringify(ds)}`);
  assert.ok(!Array.isArray(ds), 'a single composite row, not an array');
  assert.equal(ds.user_id, u.user.id);
  assert.equal(ds.status, 'uploading');
  assert.equal(ds.training_ready, false);
  assert.equal(ds.file_name, 'train.jsonl');
  assert.equal(ds.storage_bucket, 'lora-datasets');
  assert.equal(ds.storage_path, `${u.user.id}/${ds.id}/train.jsonl`);

  // The row is readable by its owner through PostgREST.
  const rows = ok(await u.client.from('datasets').select('id,storage_path,status').eq('id', ds.id), 'select datasets');
  assert.deepEqual(rows, [{ id: ds.id, storage_path: ds.storage_path, status: 'uploading' }]);

  // Another user sees nothing of it.
  const other = await newUser('product-other');
  assert.deepEqual(ok(await other.client.from('datasets').select('id').eq('id', ds.id), 'other user select'), []);

  // Server-side validation: a file name with a folder is refused.
  const bad = await u.client.rpc('create_dataset', { name: 'x', file_name: '../escape.jsonl', file_size: 1 });
  fails(bad, { code: '22023', status: 400 }, 'create_dataset with ../');
});

test('product: a user cannot update datasets.status, but may rename the dataset', async () => {
  const u = await newUser('product-status');
  const ds = await createDataset(u);

  const res = await u.client.from('datasets').update({ status: 'ready', training_ready: true }).eq('id', ds.id).select();
  fails(res, { code: '42501', status: 403 }, 'PATCH datasets.status as the owner');

  const after = ok(await u.client.from('datasets').select('status,training_ready').eq('id', ds.id).single(), 'reread');
  assert.deepEqual(after, { status: 'uploading', training_ready: false }, 'status unchanged');

  // The user-writable column is writable: the refusal above is about status, not the row.
  const renamed = ok(await u.client.from('datasets').update({ name: 'Renamed' }).eq('id', ds.id).select('name,status'), 'rename');
  assert.deepEqual(renamed, [{ name: 'Renamed', status: 'uploading' }]);
});
