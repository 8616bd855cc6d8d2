//! diffusers `FlowMatchEulerDiscreteScheduler` (static shift, no dynamic shifting,
//! no karras/exponential/beta sigmas, deterministic).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::Sampler;
use crate::{ModelError, Result};

/// Flow-matching Euler sampler with a timestep shift.
///
/// Schedule, as diffusers computes it: at construction the 1000 training sigmas are
/// shifted in f32 (`s*σ/(1+(s-1)σ)`), giving `σ_max = 1` and `σ_min = shift(1/1000)`;
/// `set_timesteps(N)` takes `linspace(σ_max*1000, σ_min*1000, N)/1000` in f64, shifts
/// it **again** (f64), stores sigmas as f32 and `timesteps = σ*1000` (f32), then appends
/// a terminal `σ = 0`. Step: `x + (σ_{i+1} - σ_i) * v` in f32, cast to the model
/// output's dtype.
#[derive(Debug, Clone)]
pub struct FlowMatchEuler {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    shift: f64,
}

impl FlowMatchEuler {
    /// The schedule for `steps` steps with `shift`, `num_train_timesteps = 1000`.
    ///
    /// # Errors
    /// [`ModelError::Config`] when `steps` is 0 or above [`vdit_patterns::MAX_STEPS`] or
    /// `shift` is not a finite positive number.
    pub fn new(steps: usize, shift: f64) -> Result<Self> {
        Self::with_train_timesteps(steps, shift, 1000)
    }

    /// As [`FlowMatchEuler::new`] with another `num_train_timesteps`.
    pub fn with_train_timesteps(steps: usize, shift: f64, train: usize) -> Result<Self> {
        super::check_flow_schedule(steps, shift, train)?;
        let n = train as f32;
        let shift32 = shift as f32;
        let shift_f32 = |s: f32| shift32 * s / (1.0 + (shift32 - 1.0) * s);
        // __init__: timesteps = linspace(1, N, N, f32)[::-1]; sigmas = t / N (f32).
        let sigma_max = shift_f32(train as f32 / n) as f64;
        let sigma_min = shift_f32(1.0 / n) as f64;
        let (t0, t1) = (sigma_max * train as f64, sigma_min * train as f64);
        let lin = linspace(t0, t1, steps);
        let sigmas: Vec<f32> = lin
            .iter()
            .map(|t| {
                let s = t / train as f64;
                (shift * s / (1.0 + (shift - 1.0) * s)) as f32
            })
            .collect();
        let timesteps = sigmas.iter().map(|s| s * train as f32).collect();
        let mut sigmas = sigmas;
        sigmas.push(0.0);
        Ok(FlowMatchEuler {
            timesteps,
            sigmas,
            shift,
        })
    }

    /// `steps + 1` sigmas (the last is 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The shift.
    pub fn shift(&self) -> f64 {
        self.shift
    }
}

/// numpy `linspace(a, b, n)` in f64 (`a + i*step`, last point exactly `b`).
pub(crate) fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
            v[n - 1] = b;
            v
        }
    }
}

impl<B: Backend> Sampler<B> for FlowMatchEuler {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        if step + 1 >= self.sigmas.len() {
            return Err(ModelError::Input(format!(
                "step {step} is past the schedule's {} steps",
                self.timesteps.len()
            )));
        }
        let dt = self.sigmas[step + 1] - self.sigmas[step];
        let dtype = model_output.dtype();
        let out = sample.cast(DType::F32) + model_output.cast(DType::F32) * dt;
        Ok(if dtype == DType::F32 {
            out
        } else {
            out.cast(dtype)
        })
    }
}
