//! Training curves as a front end shows them: the metrics of the jobs on screen, loaded once and
//! then extended by the watcher's [`WatchEvent::Metrics`], drawn by core's chart module on
//! demand (so a running job's chart costs one small poll, not a refetch of every point).

use std::collections::HashMap;
use std::sync::Mutex;

use brightrun_core::MetricsPoint;
use brightrun_core::chart::{Chart, ChartKind, ChartSize, ChartStyle};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::error::{Error, Result};
use crate::watch::WatchEvent;

/// At most this many jobs on one comparison chart.
pub const MAX_COMPARED: usize = 4;

/// One job's curve: the points of its current attempt, sorted by step, one per step.
#[derive(Debug, Default)]
struct Curve {
    attempt: i64,
    points: Vec<MetricsPoint>,
}

impl Curve {
    /// Adds points of `attempt`: a later attempt replaces the curve (the job trains again from
    /// step 1), an earlier one is ignored, a step already held is replaced.
    fn merge(&mut self, attempt: i64, points: impl IntoIterator<Item = MetricsPoint>) {
        if attempt < self.attempt {
            return;
        }
        if attempt > self.attempt {
            self.attempt = attempt;
            self.points.clear();
        }
        for point in points {
            match self.points.last() {
                Some(last) if last.step >= point.step => {
                    match self.points.binary_search_by_key(&point.step, |p| p.step) {
                        Ok(at) => self.points[at] = point,
                        Err(at) => self.points.insert(at, point),
                    }
                }
                _ => self.points.push(point),
            }
        }
    }
}

/// The curves of the jobs a front end has shown, by job.
#[derive(Debug, Default)]
pub struct Curves {
    jobs: Mutex<HashMap<Uuid, Curve>>,
    /// Jobs whose whole history has been fetched (the watcher only brings what is new).
    loaded: Mutex<std::collections::HashSet<Uuid>>,
}

/// One line of a chart: a job, named in the legend by `label`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChartLine {
    pub job_id: Uuid,
    pub label: String,
}

/// A chart to draw: one job's `kind`, or the training loss of up to [`MAX_COMPARED`] jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChartRequest {
    pub lines: Vec<ChartLine>,
    /// For one job; a comparison always draws training loss.
    pub kind: ChartKind,
    pub size: ChartSize,
    #[serde(default)]
    pub style: ChartStyle,
}

/// A drawn chart, and how many points it was drawn from (before decimation).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DrawnChart {
    pub svg: String,
    pub points: u32,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Curves {
    /// Takes in a watcher event; true when it added points.
    pub fn apply(&self, event: &WatchEvent) -> bool {
        let WatchEvent::Metrics {
            job_id,
            attempt,
            points,
        } = event
        else {
            return false;
        };
        lock(&self.jobs)
            .entry(*job_id)
            .or_default()
            .merge(*attempt, points.iter().cloned());
        !points.is_empty()
    }

    /// Fetches a job's whole curve once (its current attempt), merged with what the watcher
    /// brought meanwhile.
    pub async fn load(&self, app: &App, job_id: Uuid) -> Result<()> {
        if lock(&self.loaded).contains(&job_id) {
            return Ok(());
        }
        let api = app.api().await?;
        let job = api.job(job_id).await?;
        let attempt = job.metrics_attempt();
        let points = api.metrics_since(job.id, attempt, None).await?;
        lock(&self.jobs)
            .entry(job_id)
            .or_default()
            .merge(attempt, points);
        lock(&self.loaded).insert(job_id);
        Ok(())
    }

    /// Draws the chart as SVG without its title (loading the curves it needs first).
    pub async fn draw(&self, app: &App, request: ChartRequest) -> Result<DrawnChart> {
        let (mut chart, points) = self.chart(app, &request).await?;
        // The window titles its charts; an exported PNG keeps the title.
        chart.title.clear();
        let svg = chart
            .to_svg_styled(request.size, request.style)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(DrawnChart {
            svg,
            points: u32::try_from(points).unwrap_or(u32::MAX),
        })
    }

    /// Writes the chart as a PNG image to `path` (export).
    pub async fn export_png(
        &self,
        app: &App,
        request: ChartRequest,
        path: &std::path::Path,
    ) -> Result<()> {
        let (chart, _) = self.chart(app, &request).await?;
        let png = chart
            .to_png_styled(request.size, request.style)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        tokio::fs::write(path, png).await?;
        Ok(())
    }

    async fn chart(&self, app: &App, request: &ChartRequest) -> Result<(Chart, usize)> {
        if request.lines.is_empty() || request.lines.len() > MAX_COMPARED {
            return Err(Error::InvalidInput(format!(
                "a chart shows 1 to {MAX_COMPARED} jobs, not {}",
                request.lines.len()
            )));
        }
        for line in &request.lines {
            self.load(app, line.job_id).await?;
        }
        let jobs = lock(&self.jobs);
        let empty = Curve::default();
        let curve = |id: &Uuid| jobs.get(id).unwrap_or(&empty);
        let (chart, points) = match request.lines.as_slice() {
            [one] => {
                let points = &curve(&one.job_id).points;
                (Chart::from_metrics(request.kind, points), points.len())
            }
            lines => {
                let series: Vec<(String, &[MetricsPoint])> = lines
                    .iter()
                    .map(|l| (l.label.clone(), curve(&l.job_id).points.as_slice()))
                    .collect();
                let total = series.iter().map(|(_, p)| p.len()).sum();
                (Chart::compare(&series), total)
            }
        };
        Ok((chart, points))
    }

    /// Forgets every curve (signed out).
    pub fn clear(&self) {
        lock(&self.jobs).clear();
        lock(&self.loaded).clear();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn point(attempt: i64, step: i64, loss: f64) -> MetricsPoint {
        MetricsPoint {
            id: Uuid::new_v4(),
            job_id: Uuid::nil(),
            attempt,
            timestamp: Utc::now(),
            epoch: 0,
            step,
            training_loss: loss,
            validation_loss: None,
            learning_rate: 1e-4,
            gradient_norm: None,
            throughput: None,
            gpu_utilization: None,
        }
    }

    fn steps(curve: &Curve) -> Vec<(i64, f64)> {
        curve
            .points
            .iter()
            .map(|p| (p.step, p.training_loss))
            .collect()
    }

    #[test]
    fn points_merge_by_step_and_a_new_attempt_restarts_the_curve() {
        let mut curve = Curve::default();
        curve.merge(1, [point(1, 1, 3.0), point(1, 2, 2.5)]);
        // A full load that overlaps what the watcher brought, out of order.
        curve.merge(1, [point(1, 3, 2.0), point(1, 2, 2.4), point(1, 0, 4.0)]);
        assert_eq!(steps(&curve), [(0, 4.0), (1, 3.0), (2, 2.4), (3, 2.0)]);
        curve.merge(2, [point(2, 1, 3.1)]);
        assert_eq!(steps(&curve), [(1, 3.1)], "attempt 2 replaces attempt 1");
        curve.merge(1, [point(1, 4, 1.0)]);
        assert_eq!(
            steps(&curve),
            [(1, 3.1)],
            "late points of attempt 1 are ignored"
        );
    }

    #[test]
    fn apply_takes_metrics_events_only() {
        let curves = Curves::default();
        let id = Uuid::new_v4();
        let added = curves.apply(&WatchEvent::Metrics {
            job_id: id,
            attempt: 1,
            points: vec![point(1, 1, 2.0)],
        });
        assert!(added);
        assert!(!curves.apply(&WatchEvent::Online));
        assert_eq!(lock(&curves.jobs)[&id].points.len(), 1);
    }
}
