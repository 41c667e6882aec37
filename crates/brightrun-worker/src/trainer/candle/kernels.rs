//! The hot spots of a small model with hand-written backward passes. candle builds the backward
//! of composed ops (`ops::softmax`, `ops::rms_norm_slow`, `log_softmax` + `gather`, `silu · up`)
//! out of many broadcast ops: at `[4, 4, 256, 256]` the attention softmax alone took ~60 ms per
//! layer. Here the forward runs on detached tensors with candle's fast ops, and a custom op
//! attaches the result to its inputs with a gradient written as a few fast ops (the formulas are
//! checked against candle's own autograd in the tests below).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};

type Grad1 = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;
type Grad2 = dyn Fn(&Tensor) -> Result<(Tensor, Tensor)> + Send + Sync;

fn copy_of(storage: &CpuStorage, layout: &Layout, op: &str) -> Result<(CpuStorage, Shape)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok((
            CpuStorage::F32(data[start..end].to_vec()),
            layout.shape().clone(),
        )),
        None => candle_core::bail!("{op}: result must be contiguous"),
    }
}

/// Forward: a copy of the precomputed result `y`; backward: `grad(g)` for the input.
struct Attach1 {
    grad: Arc<Grad1>,
}

impl CustomOp2 for Attach1 {
    fn name(&self) -> &'static str {
        "attach-grad-1"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_of(s2, l2, self.name())
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some((self.grad)(grad)?), None))
    }
}

struct Attach2 {
    grad: Arc<Grad2>,
}

impl CustomOp3 for Attach2 {
    fn name(&self) -> &'static str {
        "attach-grad-2"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_of(s3, l3, self.name())
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (ga, gb) = (self.grad)(grad)?;
        Ok((Some(ga), Some(gb), None))
    }
}

fn attach1(
    x: &Tensor,
    y: Tensor,
    grad: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    x.apply_op2(
        &y.contiguous()?,
        Attach1 {
            grad: Arc::new(grad),
        },
    )
}

fn attach2(
    a: &Tensor,
    b: &Tensor,
    y: Tensor,
    grad: impl Fn(&Tensor) -> Result<(Tensor, Tensor)> + Send + Sync + 'static,
) -> Result<Tensor> {
    a.apply_op3(
        b,
        &y.contiguous()?,
        Attach2 {
            grad: Arc::new(grad),
        },
    )
}

/// `[t, t]` additive causal mask: 0 on and below the diagonal, −∞ above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let idx = Tensor::arange(0u32, t as u32, device)?;
    let above = idx.unsqueeze(0)?.broadcast_gt(&idx.unsqueeze(1)?)?;
    above.where_cond(
        &Tensor::full(f32::NEG_INFINITY, (t, t), device)?,
        &Tensor::zeros((t, t), DType::F32, device)?,
    )
}

/// `softmax(scale · x + mask)` over the last dim; `dx = scale · y · (g − Σ g·y)`.
pub fn masked_softmax(x: &Tensor, scale: f64, mask: &Tensor) -> Result<Tensor> {
    let z = (x.detach() * scale)?.broadcast_add(mask)?;
    let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?)?.exp()?;
    let y = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let saved = y.clone();
    attach1(x, y, move |g| {
        let yg = (&saved * g)?;
        let dot = yg.sum_keepdim(D::Minus1)?;
        (yg - saved.broadcast_mul(&dot)?)? * scale
    })
}

/// RMSNorm over the last dim of `x [n, h]` with weight `w [h]`.
/// `dx = r · (g·w − x̂ · mean(g·w·x̂))`, `dw = Σₙ g·x̂`, with `r = 1/sqrt(mean(x²) + eps)`,
/// `x̂ = x·r`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let xd = x.detach();
    let wd = w.detach();
    let r = (xd.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    let xhat = xd.broadcast_mul(&r)?;
    let y = xhat.broadcast_mul(&wd)?;
    attach2(x, w, y, move |g| {
        let gw = g.broadcast_mul(&wd)?;
        let dot = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = (gw - xhat.broadcast_mul(&dot)?)?.broadcast_mul(&r)?;
        let dw = (g * &xhat)?.sum(0)?;
        Ok((dx, dw))
    })
}

/// `silu(gate) · up`; `d_gate = g·up·σ·(1 + gate·(1 − σ))`, `d_up = g·silu(gate)`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let gd = gate.detach();
    let ud = up.detach();
    let sig = candle_nn::ops::sigmoid(&gd)?;
    let silu = (&gd * &sig)?;
    let y = (&silu * &ud)?;
    attach2(gate, up, y, move |g| {
        let dsilu = (&sig * ((&gd * sig.affine(-1.0, 1.0)?)? + 1.0)?)?;
        Ok((((g * &ud)? * dsilu)?, (g * &silu)?))
    })
}

/// Per-row negative log-likelihood of `targets [n]` (u32) under `logits [n, v]`;
/// `dlogits = (softmax − onehot) · g`.
pub fn nll_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let ld = logits.detach();
    let lsm = candle_nn::ops::log_softmax(&ld, D::Minus1)?;
    let rows = lsm.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let v = ld.dim(1)?;
    let onehot = targets
        .unsqueeze(1)?
        .broadcast_eq(&Tensor::arange(0u32, v as u32, ld.device())?.unsqueeze(0)?)?
        .to_dtype(DType::F32)?;
    attach1(logits, rows, move |g| {
        (lsm.exp()? - &onehot)?.broadcast_mul(&g.unsqueeze(1)?)
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Max |difference| of forward values and of the gradients of `Σ w · f(x…)`.
    fn compare(
        inputs: &[Tensor],
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<(f32, f32)> {
        let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let a = reference(&ts)?;
        let b = fused(&ts)?;
        let w = Tensor::randn(0f32, 1.0, a.shape(), a.device())?;
        let fwd: f32 = (&a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
        let ga = (a * &w)?.sum_all()?.backward()?;
        let gb = (b * &w)?.sum_all()?.backward()?;
        let mut bwd = 0f32;
        for v in &vars {
            let x = ga.get(v).expect("reference grad");
            let y = gb.get(v).expect("fused grad");
            bwd = bwd.max((x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar()?);
        }
        Ok((fwd, bwd))
    }

    #[test]
    fn fused_ops_match_candle_autograd() -> Result<()> {
        let dev = Device::Cpu;
        let t = 6;
        let mask = causal_mask(t, &dev)?;
        let (f, b) = compare(
            &[Tensor::randn(0f32, 1.0, (2, 3, t, t), &dev)?],
            |x| candle_nn::ops::softmax(&(&x[0] * 0.5)?.broadcast_add(&mask)?, D::Minus1),
            |x| masked_softmax(&x[0], 0.5, &mask),
        )?;
        assert!(
            f < 1e-6 && b < 1e-5,
            "masked softmax differs: forward {f}, backward {b}"
        );

        let (f, b) = compare(
            &[
                Tensor::randn(0f32, 1.0, (5, 8), &dev)?,
                Tensor::randn(1f32, 0.1, 8, &dev)?,
            ],
            |x| candle_nn::ops::rms_norm_slow(&x[0], &x[1], 1e-5),
            |x| rms_norm(&x[0], &x[1], 1e-5),
        )?;
        assert!(
            f < 1e-5 && b < 1e-4,
            "rms norm differs: forward {f}, backward {b}"
        );

        let (f, b) = compare(
            &[
                Tensor::randn(0f32, 2.0, (5, 8), &dev)?,
                Tensor::randn(0f32, 1.0, (5, 8), &dev)?,
            ],
            |x| x[0].silu()? * &x[1],
            |x| swiglu(&x[0], &x[1]),
        )?;
        assert!(
            f < 1e-5 && b < 1e-4,
            "swiglu differs: forward {f}, backward {b}"
        );

        let targets = Tensor::new(&[3u32, 0, 9, 4], &dev)?;
        let (f, b) = compare(
            &[Tensor::randn(0f32, 2.0, (4, 10), &dev)?],
            |x| {
                candle_nn::ops::log_softmax(&x[0], D::Minus1)?
                    .gather(&targets.unsqueeze(1)?, 1)?
                    .squeeze(1)?
                    .neg()
            },
            |x| nll_rows(&x[0], &targets),
        )?;
        assert!(
            f < 1e-5 && b < 1e-5,
            "nll differs: forward {f}, backward {b}"
        );
        Ok(())
    }
}
