//! The noise schedule shared by diffusers `CogVideoXDDIMScheduler` and
//! `CogVideoXDPMScheduler`: scaled-linear betas (f64), SNR shift, zero-terminal-SNR
//! rescale, and timestep spacing.

use crate::{ModelError, Result};

/// How inference timesteps are spaced (diffusers `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `round(arange(T, 0, -T/N)) - 1` (CogVideoX's shipped configs).
    Trailing,
    /// `arange(N) * (T // N)`, reversed, plus `steps_offset`.
    Leading,
    /// `round(linspace(0, T-1, N))`, reversed.
    Linspace,
}

/// Schedule parameters (diffusers scheduler config keys).
#[derive(Debug, Clone, PartialEq)]
pub struct CogVideoXScheduleConfig {
    /// `num_train_timesteps` (1000).
    pub num_train_timesteps: usize,
    /// `beta_start` (0.00085).
    pub beta_start: f64,
    /// `beta_end` (0.012).
    pub beta_end: f64,
    /// `snr_shift_scale`: 1.0 for the 5B models, 3.0 for 2B (and the class default).
    pub snr_shift_scale: f64,
    /// `rescale_betas_zero_snr` (true).
    pub rescale_betas_zero_snr: bool,
    /// `set_alpha_to_one` (true): the alpha past the last step is 1.
    pub set_alpha_to_one: bool,
    /// `timestep_spacing` (trailing).
    pub timestep_spacing: TimestepSpacing,
    /// `steps_offset` (0; only used by leading spacing).
    pub steps_offset: i64,
}

impl Default for CogVideoXScheduleConfig {
    /// The CogVideoX1.5-5B scheduler config: scaled-linear betas 0.00085..0.012,
    /// v-prediction, zero terminal SNR, `snr_shift_scale` 1.0, trailing spacing.
    fn default() -> Self {
        CogVideoXScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            snr_shift_scale: 1.0,
            rescale_betas_zero_snr: true,
            set_alpha_to_one: true,
            timestep_spacing: TimestepSpacing::Trailing,
            steps_offset: 0,
        }
    }
}

/// Computed schedule: `alphas_cumprod` (f64, like diffusers' float64 tensor) and the
/// integer inference timesteps.
#[derive(Debug, Clone)]
pub(crate) struct CogVideoXSchedule {
    pub alphas_cumprod: Vec<f64>,
    pub final_alpha_cumprod: f64,
    pub timesteps: Vec<i64>,
    pub timesteps_f32: Vec<f32>,
    /// `num_train_timesteps // num_inference_steps`.
    pub stride: i64,
}

/// torch.linspace in f64 (the CPU kernel fills the first half from `start` and the
/// second half from `end`).
fn torch_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

/// `alphas_cumprod` of the config (scaled-linear betas, SNR shift, zero-SNR rescale).
pub(crate) fn alphas_cumprod(c: &CogVideoXScheduleConfig) -> Vec<f64> {
    let betas: Vec<f64> = torch_linspace(
        c.beta_start.sqrt(),
        c.beta_end.sqrt(),
        c.num_train_timesteps,
    )
    .into_iter()
    .map(|b| b * b)
    .collect();
    let mut acc = 1.0f64;
    let s = c.snr_shift_scale;
    let mut a: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .map(|a| a / (s + (1.0 - s) * a))
        .collect();
    if c.rescale_betas_zero_snr && !a.is_empty() {
        let mut sq: Vec<f64> = a.iter().map(|x| x.sqrt()).collect();
        let s0 = sq[0];
        let st = sq[sq.len() - 1];
        let k = s0 / (s0 - st);
        for v in &mut sq {
            *v -= st;
            *v *= k;
        }
        a = sq.iter().map(|x| x.powi(2)).collect();
    }
    a
}

impl CogVideoXSchedule {
    pub fn new(c: &CogVideoXScheduleConfig, steps: usize) -> Result<Self> {
        let t = c.num_train_timesteps;
        if t == 0 || t > vdit_patterns::MAX_STEPS {
            return Err(ModelError::Config(format!(
                "num_train_timesteps must be in 1..={}, got {t}",
                vdit_patterns::MAX_STEPS
            )));
        }
        if steps == 0 || steps > t {
            return Err(ModelError::Config(format!(
                "num_inference_steps must be in 1..={t}, got {steps}"
            )));
        }
        let ac = alphas_cumprod(c);
        let timesteps: Vec<i64> = match c.timestep_spacing {
            TimestepSpacing::Trailing => {
                // numpy: arange(T, 0, -T/N) (len = ceil(-T / -ratio), start + i*step),
                // round half to even, minus 1.
                let ratio = t as f64 / steps as f64;
                let len = ((0.0 - t as f64) / -ratio).ceil() as usize;
                (0..len)
                    .map(|i| (t as f64 + i as f64 * -ratio).round_ties_even() as i64 - 1)
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = (t / steps) as i64;
                (0..steps as i64)
                    .rev()
                    .map(|i| i * ratio + c.steps_offset)
                    .collect()
            }
            TimestepSpacing::Linspace => {
                let v = if steps == 1 {
                    vec![0.0]
                } else {
                    let step = (t - 1) as f64 / (steps - 1) as f64;
                    let mut v: Vec<f64> = (0..steps).map(|i| i as f64 * step).collect();
                    v[steps - 1] = (t - 1) as f64;
                    v
                };
                v.iter().rev().map(|x| x.round_ties_even() as i64).collect()
            }
        };
        if let Some(bad) = timesteps.iter().find(|&&x| x < 0 || x as usize >= t) {
            return Err(ModelError::Config(format!(
                "timestep {bad} out of range for {t} training timesteps"
            )));
        }
        Ok(CogVideoXSchedule {
            final_alpha_cumprod: if c.set_alpha_to_one { 1.0 } else { ac[0] },
            timesteps_f32: timesteps.iter().map(|&x| x as f32).collect(),
            timesteps,
            alphas_cumprod: ac,
            stride: (t / steps) as i64,
        })
    }

    /// `(alpha_prod_t, alpha_prod_t_prev, prev_timestep)` of step `i`.
    pub fn alphas(&self, i: usize) -> (f64, f64, i64) {
        let t = self.timesteps[i];
        let prev = t - self.stride;
        let a_t = self.alphas_cumprod[t as usize];
        let a_prev = if prev >= 0 {
            self.alphas_cumprod[prev as usize]
        } else {
            self.final_alpha_cumprod
        };
        (a_t, a_prev, prev)
    }

    pub fn check_step(&self, step: usize, expected: Option<usize>) -> Result<()> {
        if step >= self.timesteps.len() {
            return Err(ModelError::Input(format!(
                "step {step} is past the schedule's {} steps",
                self.timesteps.len()
            )));
        }
        if let Some(e) = expected
            && e != step
        {
            return Err(ModelError::Input(format!(
                "steps must be taken in order: expected step {e}, got {step}"
            )));
        }
        Ok(())
    }
}
