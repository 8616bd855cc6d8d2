//! diffusers `CogVideoXDPMScheduler`: the stochastic DPM-Solver++(2M) CogVideoX's
//! official inference uses, v-prediction.

use std::collections::VecDeque;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};

use super::Sampler;
use super::cogvideox_schedule::{CogVideoXSchedule, CogVideoXScheduleConfig};
use super::ddim_cogvideox::{restore, v_to_x0};
use crate::{ModelError, Result};

/// `CogVideoXDPMScheduler` with `prediction_type="v_prediction"`.
///
/// With `λ = log sqrt(ᾱ/(1-ᾱ))`, `h = λ_prev - λ_t`:
/// `m1 = sqrt((1-ᾱ_prev)/(1-ᾱ_t)) e^{-h}`, `m2 = expm1(-2h) sqrt(ᾱ_prev)`,
/// `σ = sqrt(1-ᾱ_prev) sqrt(1-e^{-2h})`. The first step (and a step past the end of the
/// schedule) is `m1 x - m2 x0 + σ ε`; the others use
/// `D = (1 + 1/(2r)) x0 - 1/(2r) x0_old` with `r = h_last / h`. Scalars in f64, tensor
/// ops in f32.
///
/// `ε` is standard normal noise from the backend RNG, or the next tensor queued with
/// [`CogVideoXDpm::push_noise`] (to reproduce a run exactly; diffusers draws from its
/// `generator`, twice on multistep steps, using the second draw).
#[derive(Debug, Clone)]
pub struct CogVideoXDpm<B: Backend> {
    schedule: CogVideoXSchedule,
    old_x0: Option<Tensor<B, 5>>,
    next_step: usize,
    noise: VecDeque<Tensor<B, 5>>,
}

impl<B: Backend> CogVideoXDpm<B> {
    /// The CogVideoX1.5-5B scheduler ([`CogVideoXScheduleConfig::default`]) for `steps`
    /// steps.
    pub fn new(steps: usize) -> Result<Self> {
        Self::with_config(&CogVideoXScheduleConfig::default(), steps)
    }

    /// Another schedule config.
    pub fn with_config(config: &CogVideoXScheduleConfig, steps: usize) -> Result<Self> {
        Ok(CogVideoXDpm {
            schedule: CogVideoXSchedule::new(config, steps)?,
            old_x0: None,
            next_step: 0,
            noise: VecDeque::new(),
        })
    }

    /// Queues the noise the next step uses (instead of drawing from the backend RNG).
    pub fn push_noise(&mut self, noise: Tensor<B, 5>) {
        self.noise.push_back(noise);
    }

    /// The integer timesteps.
    pub fn timesteps_i64(&self) -> &[i64] {
        &self.schedule.timesteps
    }

    /// `alphas_cumprod` (f64, one per training timestep).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.schedule.alphas_cumprod
    }
}

fn lambda(a: f64) -> f64 {
    (a / (1.0 - a)).sqrt().ln()
}

impl<B: Backend> Sampler<B> for CogVideoXDpm<B> {
    fn timesteps(&self) -> &[f32] {
        &self.schedule.timesteps_f32
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        self.schedule.check_step(step, Some(self.next_step))?;
        let (a_t, a_prev, prev_t) = self.schedule.alphas(step);
        let dtype = sample.dtype();
        let x = sample.cast(DType::F32);
        let x0 = v_to_x0(a_t, x.clone(), model_output.cast(DType::F32));

        let lamb = lambda(a_t);
        let h = lambda(a_prev) - lamb;
        let m1 = ((1.0 - a_prev) / (1.0 - a_t)).sqrt() * (-h).exp();
        let m2 = (-2.0 * h).exp_m1() * a_prev.sqrt();
        let sigma = (1.0 - a_prev).sqrt() * (1.0 - (-2.0 * h).exp()).sqrt();
        let noise = match self.noise.pop_front() {
            Some(n) => {
                if n.dims() != x.dims() {
                    return Err(ModelError::Input(format!(
                        "queued noise has shape {:?}, the sample {:?}",
                        n.dims(),
                        x.dims()
                    )));
                }
                n.cast(DType::F32)
            }
            None => Tensor::random(
                x.dims(),
                Distribution::Normal(0.0, 1.0),
                (&x.device(), DType::F32),
            ),
        };
        let denoised = match &self.old_x0 {
            Some(old) if prev_t >= 0 => {
                let t_back = self.schedule.timesteps[step - 1];
                let a_back = self.schedule.alphas_cumprod[t_back as usize];
                let h_last = lamb - lambda(a_back);
                let r = h_last / h;
                let m3 = 1.0 + 1.0 / (2.0 * r);
                let m4 = 1.0 / (2.0 * r);
                x0.clone() * (m3 as f32) - old.clone() * (m4 as f32)
            }
            _ => x0.clone(),
        };
        let out = x * (m1 as f32) - denoised * (m2 as f32) + noise * (sigma as f32);
        self.old_x0 = Some(x0);
        self.next_step = step + 1;
        Ok(restore(out, dtype))
    }
}
