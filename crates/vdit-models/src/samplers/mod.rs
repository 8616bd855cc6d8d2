//! Samplers (diffusers schedulers) and classifier-free guidance.
//!
//! A [`Sampler`] owns its schedule: [`Sampler::timesteps`] are the values passed to the
//! model at each step, and [`Sampler::step`] turns the model output at step `i` into
//! the next latents. Schedules are computed on the host with the same float widths
//! as diffusers (f64 numpy where diffusers uses numpy, f32 where it uses torch), so
//! timesteps and sigmas match bit for bit or to the last ulp.
//!
//! - [`FlowMatchEuler`]: `FlowMatchEulerDiscreteScheduler` with `shift` (HunyuanVideo;
//!   Wan's pipeline tests).
//! - [`UniPcFlow`]: `UniPCMultistepScheduler` in the flow-prediction configuration Wan2.1
//!   ships with (`bh2`, order 2, `predict_x0`, `lower_order_final`, `final_sigmas_type=zero`).
//! - [`cfg`](fn@cfg): `uncond + scale * (cond - uncond)`.
//!
//! One file per scheduler; DDIM/CogVideoX-DPM go in their own files beside these.

mod cogvideox_schedule;
mod ddim_cogvideox;
mod dpm_cogvideox;
mod flow_euler;
mod unipc;

pub use cogvideox_schedule::{CogVideoXScheduleConfig, TimestepSpacing};
pub use ddim_cogvideox::CogVideoXDdim;
pub use dpm_cogvideox::CogVideoXDpm;
pub use flow_euler::FlowMatchEuler;
pub use unipc::UniPcFlow;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::{ModelError, Result};

/// Checks a flow schedule's settings before anything is allocated: `steps` in
/// `1..=`[`vdit_patterns::MAX_STEPS`], `train` timesteps positive, `shift` finite and
/// positive.
pub(crate) fn check_flow_schedule(steps: usize, shift: f64, train: usize) -> Result<()> {
    if steps == 0 || steps > vdit_patterns::MAX_STEPS {
        return Err(ModelError::Config(format!(
            "sampler steps must be in 1..={}, got {steps}",
            vdit_patterns::MAX_STEPS
        )));
    }
    if train == 0 {
        return Err(ModelError::Config(
            "num_train_timesteps must be positive".into(),
        ));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(ModelError::Config(format!(
            "flow shift must be a finite number > 0, got {shift}"
        )));
    }
    Ok(())
}

/// A denoising schedule and its update rule over 5-D video latents.
pub trait Sampler<B: Backend> {
    /// The model timestep of every step, in order (e.g. `sigma * 1000` for flow models).
    fn timesteps(&self) -> &[f32];

    /// Scale of the initial noise (`init_noise_sigma`; 1 for flow and v-prediction
    /// samplers).
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// The latents after step `step` given the model output at that step. Steps must
    /// be taken in order `0, 1, ...` (multistep samplers keep history).
    ///
    /// # Errors
    /// [`crate::ModelError::Input`] when `step` is out of range or out of order.
    ///
    /// # Shapes
    /// `model_output` and `sample` have the latent shape; so has the result.
    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>>;
}

/// Classifier-free guidance: `uncond + scale * (cond - uncond)` (diffusers pipelines).
pub fn cfg<B: Backend, const D: usize>(
    uncond: Tensor<B, D>,
    cond: Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    uncond.clone() + (cond - uncond) * scale
}
