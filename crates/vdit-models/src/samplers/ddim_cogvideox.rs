//! diffusers `CogVideoXDDIMScheduler` (deterministic DDIM, eta ignored as in diffusers),
//! v-prediction.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::Sampler;
use super::cogvideox_schedule::{CogVideoXSchedule, CogVideoXScheduleConfig};
use crate::Result;

/// `CogVideoXDDIMScheduler` with `prediction_type="v_prediction"`.
///
/// Step `i` at timestep `t` (`prev = t - T // N`, `ᾱ_prev = 1` past the end):
/// `x0 = sqrt(ᾱ_t) x - sqrt(1-ᾱ_t) v`, `a = sqrt((1-ᾱ_prev)/(1-ᾱ_t))`,
/// `b = sqrt(ᾱ_prev) - sqrt(ᾱ_t) a`, `x_prev = a x + b x0`. Scalars in f64 like
/// diffusers' float64 `alphas_cumprod`, rounded to f32 for the tensor ops.
#[derive(Debug, Clone)]
pub struct CogVideoXDdim {
    schedule: CogVideoXSchedule,
}

impl CogVideoXDdim {
    /// The CogVideoX1.5-5B scheduler ([`CogVideoXScheduleConfig::default`]) for `steps`
    /// steps.
    pub fn new(steps: usize) -> Result<Self> {
        Self::with_config(&CogVideoXScheduleConfig::default(), steps)
    }

    /// Another schedule config.
    pub fn with_config(config: &CogVideoXScheduleConfig, steps: usize) -> Result<Self> {
        Ok(CogVideoXDdim {
            schedule: CogVideoXSchedule::new(config, steps)?,
        })
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

/// `x0 = sqrt(ᾱ_t) x - sqrt(1-ᾱ_t) v` in f32.
pub(crate) fn v_to_x0<B: Backend>(a_t: f64, x: Tensor<B, 5>, v: Tensor<B, 5>) -> Tensor<B, 5> {
    x * (a_t.sqrt() as f32) - v * ((1.0 - a_t).sqrt() as f32)
}

pub(crate) fn restore<B: Backend>(x: Tensor<B, 5>, dtype: DType) -> Tensor<B, 5> {
    if dtype == DType::F32 {
        x
    } else {
        x.cast(dtype)
    }
}

impl<B: Backend> Sampler<B> for CogVideoXDdim {
    fn timesteps(&self) -> &[f32] {
        &self.schedule.timesteps_f32
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        self.schedule.check_step(step, None)?;
        let (a_t, a_prev, _) = self.schedule.alphas(step);
        let dtype = sample.dtype();
        let x = sample.cast(DType::F32);
        let x0 = v_to_x0(a_t, x.clone(), model_output.cast(DType::F32));
        let a = ((1.0 - a_prev) / (1.0 - a_t)).sqrt();
        let b = a_prev.sqrt() - a_t.sqrt() * a;
        Ok(restore(x * (a as f32) + x0 * (b as f32), dtype))
    }
}
