//! The model-driven search's runner over any denoiser class ([`DenoiserRunner`]: a
//! `vdit_search::ModelRunner`): the class's sampler from the sample's noise, the
//! conditional branch only, attention through the search's plan and hook.

use crate::{AnyDenoiser, PipelineError, StepInputs};
use vdit_models::ModelBackend;

/// A denoiser run for the search: the model's sampler from seeded noise, the
/// conditional branch only (no CFG), attention through the plan and the search's hook.
/// Built on the search's worker thread (see `vdit_search::ModelRunner`).
pub struct DenoiserRunner<B: ModelBackend> {
    /// The model.
    pub model: AnyDenoiser<B>,
    /// The sample's inputs (its noise and text).
    pub inputs: StepInputs<B>,
    /// Latent `[frames, height, width]`.
    pub latent: [usize; 3],
    /// Text tokens.
    pub text_len: usize,
    /// Steps of the schedule.
    pub schedule_steps: usize,
    /// Flow shift (Wan2.1, HunyuanVideo).
    pub flow_shift: f64,
    /// The device.
    pub device: B::Device,
}

impl<B: ModelBackend> DenoiserRunner<B> {
    /// The initial latents (the sample's noise).
    fn latents(&self) -> burn::tensor::Tensor<B, 5> {
        match &self.inputs {
            StepInputs::Wan { latents, .. } | StepInputs::CogVideoX { latents, .. } => {
                latents.clone()
            }
            StepInputs::Hunyuan(h) => h.hidden_states.clone(),
        }
    }

    /// The sample's inputs with latents `x` at timestep `t`.
    fn at(&self, x: burn::tensor::Tensor<B, 5>, t: burn::tensor::Tensor<B, 1>) -> StepInputs<B> {
        match &self.inputs {
            StepInputs::Wan { text, .. } => StepInputs::Wan {
                latents: x,
                timestep: t,
                text: text.clone(),
            },
            StepInputs::CogVideoX { text, .. } => StepInputs::CogVideoX {
                latents: x,
                timestep: t,
                text: text.clone(),
            },
            StepInputs::Hunyuan(h) => {
                let mut h = h.clone();
                h.hidden_states = x;
                h.timestep = t;
                StepInputs::Hunyuan(h)
            }
        }
    }
}

impl<B: ModelBackend> vdit_search::ModelRunner for DenoiserRunner<B> {
    fn run_to(
        &mut self,
        _sample: usize,
        step: usize,
        plan: &vdit_patterns::Plan,
        hook: std::sync::Arc<dyn vdit_attention::CaptureHook>,
    ) -> Result<(), vdit_search::SearchError> {
        use vdit_models::samplers::{CogVideoXDdim, FlowMatchEuler, Sampler};
        let err = |e: PipelineError| vdit_search::SearchError::Source(e.to_string());
        let merr = |e: vdit_models::ModelError| vdit_search::SearchError::Source(e.to_string());
        let ctx = self
            .model
            .attention_context(self.latent, self.text_len, Some(plan))
            .map_err(err)?
            .with_capture(hook);
        let mut sampler: Box<dyn Sampler<B>> = match self.model.class() {
            vdit_models::ModelClass::CogVideoX => {
                Box::new(CogVideoXDdim::new(self.schedule_steps).map_err(merr)?)
            }
            _ => Box::new(FlowMatchEuler::new(self.schedule_steps, self.flow_shift).map_err(merr)?),
        };
        let mut x = self.latents();
        for i in 0..=step {
            let t =
                burn::tensor::Tensor::<B, 1>::from_floats([sampler.timesteps()[i]], &self.device);
            let v = self
                .model
                .step(&self.at(x.clone(), t), &ctx.at_step(i))
                .map_err(err)?;
            if i < step {
                x = sampler.step(v, i, x).map_err(merr)?;
            }
        }
        Ok(())
    }
}
