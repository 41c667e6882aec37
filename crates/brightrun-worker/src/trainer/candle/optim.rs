//! AdamW with decoupled weight decay, linear warmup + cosine decay, global-norm clipping, and
//! right-padded batches with a loss mask.

use candle_core::{Device, Result, Tensor, Var};

use super::tokenizer::{Encoded, PAD};

/// One batch: inputs `ids[..-1]`, targets `ids[1..]`, mask of the targets that carry the loss.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
    /// Rows of the flattened `[b·t]` positions whose target carries the loss, and those
    /// targets: the LM head and the softmax only run there.
    pub loss_rows: Tensor,
    pub loss_targets: Tensor,
    /// Targets that carry the loss.
    pub target_count: usize,
    /// Input ids that are not padding (throughput is counted in these).
    pub token_count: usize,
}

impl Batch {
    pub fn new(examples: &[&Encoded], device: &Device) -> Result<Self> {
        let width = examples
            .iter()
            .map(|e| e.ids.len())
            .max()
            .unwrap_or(2)
            .max(2)
            - 1;
        let n = examples.len();
        let mut inputs = vec![PAD; n * width];
        let mut targets = vec![PAD; n * width];
        let mut mask = vec![0f32; n * width];
        let (mut loss_rows, mut loss_targets) = (Vec::new(), Vec::new());
        let (mut target_count, mut token_count) = (0, 0);
        for (row, e) in examples.iter().enumerate() {
            for pos in 0..e.ids.len().saturating_sub(1) {
                let at = row * width + pos;
                inputs[at] = e.ids[pos];
                targets[at] = e.ids[pos + 1];
                token_count += 1;
                if e.trainable[pos + 1] {
                    mask[at] = 1.0;
                    target_count += 1;
                    loss_rows.push(at as u32);
                    loss_targets.push(e.ids[pos + 1]);
                }
            }
        }
        Ok(Self {
            inputs: Tensor::from_vec(inputs, (n, width), device)?,
            targets: Tensor::from_vec(targets, (n, width), device)?,
            mask: Tensor::from_vec(mask, (n, width), device)?,
            loss_rows: Tensor::from_vec(loss_rows, target_count, device)?,
            loss_targets: Tensor::from_vec(loss_targets, target_count, device)?,
            target_count,
            token_count,
        })
    }
}

/// Learning rate of optimizer step `step` (0-based) of `total`: linear warmup to `peak` over
/// `warmup` steps (the first step already gets `peak / warmup`), then cosine decay towards 0.
pub fn learning_rate(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let warmup = warmup.min(total.saturating_sub(1));
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i32,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Applies one update with `grads` (one per var, in order).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        for (i, var) in self.vars.iter().enumerate() {
            let g = &grads[i];
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads.iter() {
        sum += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = sum.sqrt();
    if norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * factor)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let lr = |s| learning_rate(1.0, s, 4, 20);
        assert!(
            (lr(0) - 0.25).abs() < 1e-12,
            "first warmup step gets peak/warmup"
        );
        assert!((lr(3) - 1.0).abs() < 1e-12, "warmup ends at the peak");
        assert!((lr(4) - 1.0).abs() < 1e-12, "cosine starts at the peak");
        assert!(lr(10) < lr(5) && lr(19) < lr(10), "cosine decays");
        assert!(
            lr(19) > 0.0 && lr(19) < 0.05,
            "last step near zero, not zero"
        );
        assert!(
            learning_rate(1.0, 0, 50, 3) > 0.0,
            "warmup longer than the run still trains"
        );
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_clipping_bounds_the_norm() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[3f32, -2.0], &dev)?)?;
        let mut opt = AdamW::new(vec![x.clone()], 0.0)?;
        for _ in 0..300 {
            let loss = x.as_tensor().sqr()?.sum_all()?;
            let grads = loss.backward()?;
            let mut g = vec![grads.get(&x).expect("grad of x").clone()];
            clip_grad_norm(&mut g, 1.0)?;
            let norm: f32 = g[0].sqr()?.sum_all()?.to_scalar()?;
            assert!(
                norm.sqrt() <= 1.0 + 1e-4,
                "clipped norm {norm} must be <= 1"
            );
            opt.step(&g, 0.05)?;
        }
        let v: Vec<f32> = x.as_tensor().to_vec1()?;
        assert!(
            v.iter().all(|x| x.abs() < 0.1),
            "AdamW should reach the minimum at 0, got {v:?}"
        );
        Ok(())
    }
}
