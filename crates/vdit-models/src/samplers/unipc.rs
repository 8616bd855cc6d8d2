//! diffusers `UniPCMultistepScheduler` in the flow configuration Wan2.1 ships with:
//! `prediction_type="flow_prediction"`, `use_flow_sigmas=True`, `flow_shift`,
//! `solver_type="bh2"`, `predict_x0=True`, `lower_order_final=True`,
//! `final_sigmas_type="zero"`, `timestep_spacing="linspace"`, no dynamic shifting, no
//! thresholding, empty `disable_corrector`. `solver_order` is configurable (2 in Wan).
//!
//! Port of `scheduling_unipc_multistep.py` (`set_timesteps` flow branch,
//! `convert_model_output`, `multistep_uni_p_bh_update`, `multistep_uni_c_bh_update`,
//! `step`). Scalars are f32 like diffusers' f32 sigma tensors; the small linear solve
//! for order > 2 is done in f64 and rounded. Model timesteps are the truncated integers
//! `int64(σ·1000)` exactly as diffusers passes them.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::Sampler;
use super::flow_euler::linspace;
use crate::{ModelError, Result};

/// UniPC multistep (B(h)=expm1, predictor-corrector) for flow-matching models.
#[derive(Debug, Clone)]
pub struct UniPcFlow<B: Backend> {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    order: usize,
    /// Converted model outputs (x0 predictions), oldest first, at most `order`.
    model_outputs: Vec<Tensor<B, 5>>,
    last_sample: Option<Tensor<B, 5>>,
    lower_order_nums: usize,
    this_order: usize,
    next_step: usize,
}

impl<B: Backend> UniPcFlow<B> {
    /// Wan2.1's scheduler for `steps` steps with `flow_shift` (3.0 at 480p, 5.0 at 720p in
    /// the diffusers configs), order 2, 1000 training timesteps.
    ///
    /// # Errors
    /// [`ModelError::Config`] when `steps` is 0 or above [`vdit_patterns::MAX_STEPS`] or
    /// `flow_shift` is not a finite positive number.
    pub fn new(steps: usize, flow_shift: f64) -> Result<Self> {
        Self::with_order(steps, flow_shift, 2, 1000)
    }

    /// As [`UniPcFlow::new`] with another solver order and number of training timesteps.
    pub fn with_order(steps: usize, flow_shift: f64, order: usize, train: usize) -> Result<Self> {
        super::check_flow_schedule(steps, flow_shift, train)?;
        let order = order.max(1);
        // sigmas = linspace(1, 1/N, steps+1)[:-1], shifted (f64 numpy).
        let mut s: Vec<f64> = linspace(1.0, 1.0 / train as f64, steps + 1);
        s.pop();
        let mut s: Vec<f64> = s
            .into_iter()
            .map(|x| flow_shift * x / (1.0 + (flow_shift - 1.0) * x))
            .collect();
        if let Some(first) = s.first_mut()
            && (*first - 1.0).abs() < 1e-6
        {
            *first -= 1e-6;
        }
        let timesteps = s.iter().map(|x| (x * train as f64) as i64 as f32).collect();
        let mut sigmas: Vec<f32> = s.iter().map(|&x| x as f32).collect();
        sigmas.push(0.0);
        Ok(UniPcFlow {
            timesteps,
            sigmas,
            order,
            model_outputs: Vec::new(),
            last_sample: None,
            lower_order_nums: 0,
            this_order: 0,
            next_step: 0,
        })
    }

    /// `steps + 1` sigmas (the last is 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn lambda(&self, i: usize) -> f32 {
        // flow sigmas: alpha = 1 - sigma; lambda = log(alpha) - log(sigma).
        let s = self.sigmas[i];
        (1.0 - s).ln() - s.ln()
    }

    /// `rhos` of the predictor/corrector and the shared scalars.
    fn coefficients(
        &self,
        lambda_t: f32,
        lambda_s0: f32,
        rks: &[f32],
        order: usize,
    ) -> (f32, f32, Vec<f32>, Vec<f32>) {
        let h = lambda_t - lambda_s0;
        let hh = -h; // predict_x0
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b_h = hh.exp_m1(); // bh2
        let mut factorial = 1.0f32;
        // R[i][k] = rks[k]^i, b[i] = h_phi_k * factorial_i / B_h.
        let mut r = vec![vec![0f32; rks.len()]; order];
        let mut b = vec![0f32; order];
        for i in 1..=order {
            for (k, &rk) in rks.iter().enumerate() {
                r[i - 1][k] = rk.powi(i as i32 - 1);
            }
            b[i - 1] = h_phi_k * factorial / b_h;
            factorial *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (h_phi_1, b_h, b, r.into_iter().flatten().collect())
    }

    fn predictor(&self, sample: Tensor<B, 5>, step: usize, order: usize) -> Tensor<B, 5> {
        let m0 = self
            .model_outputs
            .last()
            .expect("predictor runs after a model output")
            .clone();
        let (sigma_t, sigma_s0) = (self.sigmas[step + 1], self.sigmas[step]);
        let alpha_t = 1.0 - sigma_t;
        let lambda_t = self.lambda(step + 1);
        let lambda_s0 = self.lambda(step);
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let mi = self.model_outputs[self.model_outputs.len() - 1 - i].clone();
            let rk = (self.lambda(step - i) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0.clone()) / rk);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, b, r) = self.coefficients(lambda_t, lambda_s0, &rks, order);
        let x_t_ = sample * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1);
        if d1s.is_empty() {
            return x_t_;
        }
        let rhos: Vec<f32> = if order == 2 {
            vec![0.5]
        } else {
            let n = order - 1;
            let sub: Vec<f32> = (0..n)
                .flat_map(|i| r[i * order..i * order + n].to_vec())
                .collect();
            solve(&sub, &b[..n], n)
        };
        let pred_res = weighted_sum(&rhos, d1s);
        x_t_ - pred_res * (alpha_t * b_h)
    }

    fn corrector(
        &self,
        model_t: Tensor<B, 5>,
        last_sample: Tensor<B, 5>,
        step: usize,
        order: usize,
    ) -> Tensor<B, 5> {
        let m0 = self
            .model_outputs
            .last()
            .expect("corrector runs after a model output")
            .clone();
        let (sigma_t, sigma_s0) = (self.sigmas[step], self.sigmas[step - 1]);
        let alpha_t = 1.0 - sigma_t;
        let lambda_t = self.lambda(step);
        let lambda_s0 = self.lambda(step - 1);
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let mi = self.model_outputs[self.model_outputs.len() - 1 - i].clone();
            let rk = (self.lambda(step - (i + 1)) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0.clone()) / rk);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, b, r) = self.coefficients(lambda_t, lambda_s0, &rks, order);
        let rhos_c: Vec<f32> = if order == 1 {
            vec![0.5]
        } else {
            solve(&r, &b, order)
        };
        let x_t_ = last_sample * (sigma_t / sigma_s0) - m0.clone() * (alpha_t * h_phi_1);
        let d1_t = model_t - m0;
        let last = rhos_c[rhos_c.len() - 1];
        let corr = if d1s.is_empty() {
            d1_t * last
        } else {
            weighted_sum(&rhos_c[..rhos_c.len() - 1], d1s) + d1_t * last
        };
        x_t_ - corr * (alpha_t * b_h)
    }
}

fn weighted_sum<B: Backend>(w: &[f32], xs: Vec<Tensor<B, 5>>) -> Tensor<B, 5> {
    let mut it = w.iter().zip(xs);
    let (w0, x0) = it.next().expect("non-empty");
    it.fold(x0 * *w0, |acc, (wi, xi)| acc + xi * *wi)
}

/// Solves the `n x n` row-major system `a x = b` (Gaussian elimination with partial
/// pivoting, in f64, rounded to f32 like `torch.linalg.solve` on f32 inputs).
fn solve(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut m: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = a[i * n..(i + 1) * n].iter().map(|&v| v as f64).collect();
            row.push(b[i] as f64);
            row
        })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))
            .expect("non-empty");
        m.swap(c, p);
        let pivot = m[c].clone();
        for row in m.iter_mut().skip(c + 1) {
            let f = row[c] / pivot[c];
            for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                *x -= f * p;
            }
        }
    }
    let mut x = vec![0f64; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| m[r][k] * x[k]).sum();
        x[r] = (m[r][n] - s) / m[r][r];
    }
    x.into_iter().map(|v| v as f32).collect()
}

impl<B: Backend> Sampler<B> for UniPcFlow<B> {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        if step != self.next_step || step >= self.timesteps.len() {
            return Err(ModelError::Input(format!(
                "UniPC expected step {} of {}, got step {step}",
                self.next_step,
                self.timesteps.len()
            )));
        }
        let dtype = sample.dtype();
        let sample = sample.cast(DType::F32);
        // convert_model_output (flow_prediction, predict_x0): x0 = x - sigma * v.
        let x0 = sample.clone() - model_output.cast(DType::F32) * self.sigmas[step];
        let sample = match self.last_sample.take() {
            Some(last) if step > 0 => self.corrector(x0.clone(), last, step, self.this_order),
            _ => sample,
        };
        if self.model_outputs.len() == self.order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0);
        let this_order = self.order.min(self.timesteps.len() - step); // lower_order_final
        self.this_order = this_order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predictor(sample, step, self.this_order);
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        self.next_step += 1;
        Ok(if dtype == DType::F32 {
            prev
        } else {
            prev.cast(dtype)
        })
    }
}
