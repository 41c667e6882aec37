//! Claim throughput of the queue with N concurrent claimers on one PostgreSQL.
//!
//! ```text
//! cargo run --release -p brightrun-worker --example claim_bench -- \
//!     --database-url "$DB_URL" --jobs 2000 --workers 1,2,4,8,16
//! ```
//! For each worker count it queues `--jobs` jobs for a private bench user, then runs that many
//! claimers, each with its own connection, claiming (the worker's real `Queue::claim_job`) and
//! finishing each job with one fenced update, until the queue is empty. It reports claims per
//! second and checks that no job was claimed twice. The peer is the same claim without
//! `SKIP LOCKED` (plain `FOR UPDATE`), where claimers queue up behind each other's row lock.

use std::time::{Duration, Instant};

use brightrun_worker::queue::{Queue, QueuePolicy};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

struct Args {
    database_url: String,
    jobs: usize,
    workers: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        database_url: std::env::var("DATABASE_URL").unwrap_or_default(),
        jobs: 2000,
        workers: vec![1, 2, 4, 8, 16],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--database-url" => a.database_url = value,
            "--jobs" => a.jobs = value.parse().expect("--jobs N"),
            "--workers" => {
                a.workers = value
                    .split(',')
                    .map(|n| n.parse().expect("--workers 1,2,4"))
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        !a.database_url.is_empty(),
        "--database-url or DATABASE_URL is required"
    );
    a
}

async fn bench_user(pool: &PgPool) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    sqlx::query(
        "insert into auth.users (id, aud, role, email, created_at, updated_at)
         values ($1, 'authenticated', 'authenticated', $2, now(), now())",
    )
    .bind(user)
    .bind(format!("claim-bench-{}@example.test", user.simple()))
    .execute(pool)
    .await
    .expect("bench user");
    let dataset: Uuid = sqlx::query_scalar(
        "insert into public.datasets (user_id, name, status, storage_path, file_name, file_size,
                                      validated_at, total_tokens, training_tokens, training_ready)
         values ($1, 'bench', 'ready', $1::text || '/bench/' || gen_random_uuid()::text, 'b.jsonl', 1,
                 now(), 1000, 1000, true)
         returning id",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .expect("bench dataset");
    (user, dataset)
}

async fn queue_jobs(pool: &PgPool, user: Uuid, dataset: Uuid, n: usize) {
    sqlx::query(
        "insert into public.training_jobs (user_id, dataset_id, preset_id, hyperparameters, gpu_config,
                                           total_epochs, estimated_total_cost, cost_per_gpu_hour, num_gpus)
         select $1, $2, 'balanced', '{}'::jsonb, '{}'::jsonb, 1, 1, 3, 1 from generate_series(1, $3)",
    )
    .bind(user)
    .bind(dataset)
    .bind(n as i32)
    .execute(pool)
    .await
    .expect("queue jobs");
}

/// The peer: the same claim with a plain `FOR UPDATE` (no SKIP LOCKED).
async fn naive_claim(pool: &PgPool, worker: &str, user: Uuid) -> Option<(Uuid, i32)> {
    sqlx::query_as(
        "update public.training_jobs j
            set status = 'initializing', worker_id = $1, attempt = j.attempt + 1,
                lease_expires_at = now() + interval '30 seconds'
           from (select q.id from public.training_jobs q
                  where q.status = 'queued' and q.user_id = $2
                  order by q.created_at, q.id for update limit 1) c
          where j.id = c.id
      returning j.id, j.attempt",
    )
    .bind(worker)
    .bind(user)
    .fetch_optional(pool)
    .await
    .expect("naive claim")
}

async fn finish(pool: &PgPool, job: Uuid, attempt: i32, worker: &str) {
    let done = sqlx::query(
        "update public.training_jobs set status = 'completed', completed_at = now(), lease_expires_at = null
          where id = $1 and attempt = $2 and worker_id = $3 and status = 'initializing'",
    )
    .bind(job)
    .bind(attempt)
    .bind(worker)
    .execute(pool)
    .await
    .expect("finish");
    assert_eq!(done.rows_affected(), 1, "the fenced finish hits our row");
}

#[derive(Clone, Copy, PartialEq)]
enum Claim {
    SkipLocked,
    Naive,
}

async fn run(url: &str, jobs: usize, workers: usize, claim: Claim) -> (f64, Duration) {
    let setup = PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect");
    let (user, dataset) = bench_user(&setup).await;
    queue_jobs(&setup, user, dataset, jobs).await;
    let mut pools = Vec::new();
    for _ in 0..workers {
        pools.push(
            PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .expect("connect"),
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, pool) in pools.into_iter().enumerate() {
        let name = format!("bench-{w}");
        tasks.push(tokio::spawn(async move {
            let queue = Queue::new(pool.clone(), name.clone(), QueuePolicy::default())
                .with_only_users(Some(vec![user]));
            let mut claimed = Vec::new();
            loop {
                let next = match claim {
                    Claim::SkipLocked => queue
                        .claim_job()
                        .await
                        .expect("claim")
                        .map(|c| (c.lease.job_id, c.lease.attempt)),
                    Claim::Naive => naive_claim(&pool, &name, user).await,
                };
                let Some((id, attempt)) = next else { break };
                finish(&pool, id, attempt, &name).await;
                claimed.push(id);
            }
            pool.close().await;
            claimed
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("claimer"));
    }
    let took = start.elapsed();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no job claimed twice");
    assert_eq!(n, jobs, "every job claimed");
    sqlx::query("delete from auth.users where id = $1")
        .bind(user)
        .execute(&setup)
        .await
        .expect("clean up");
    (jobs as f64 / took.as_secs_f64(), took)
}

#[tokio::main]
async fn main() {
    let a = args();
    println!("| claimers | SKIP LOCKED claims/s | plain FOR UPDATE claims/s |");
    println!("|---:|---:|---:|");
    for &w in &a.workers {
        let (ours, _) = run(&a.database_url, a.jobs, w, Claim::SkipLocked).await;
        let (naive, _) = run(&a.database_url, a.jobs, w, Claim::Naive).await;
        println!("| {w} | {ours:.0} | {naive:.0} |");
    }
}
