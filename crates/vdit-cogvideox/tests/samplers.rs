//! CogVideoX samplers against diffusers' `CogVideoXDDIMScheduler` / `CogVideoXDPMScheduler`
//! (v-prediction, zero terminal SNR, trailing spacing): `alphas_cumprod`, timesteps, and
//! steps on fixed model outputs (the DPM steps get the noise diffusers drew).

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use vdit_models::io::TensorMap;
use vdit_models::samplers::{
    CogVideoXDdim, CogVideoXDpm, CogVideoXScheduleConfig, Sampler, TimestepSpacing,
};

fn fixtures() -> TensorMap {
    TensorMap::read(&fixture("samplers.safetensors")).unwrap()
}

fn tensor(map: &TensorMap, key: &str) -> Tensor<B, 5> {
    map.float(key, DType::F32, &Default::default()).unwrap()
}

fn config(snr: f64) -> CogVideoXScheduleConfig {
    CogVideoXScheduleConfig {
        snr_shift_scale: snr,
        ..Default::default()
    }
}

const CASES: [(f64, usize); 4] = [(1.0, 50), (1.0, 7), (3.0, 3), (1.0, 1)];

fn want_timesteps(map: &TensorMap, key: &str) -> Vec<i64> {
    let data = map.require(&format!("{key}.timesteps")).unwrap();
    data.clone().convert::<i64>().into_vec::<i64>().unwrap()
}

#[test]
fn alphas_cumprod_match_diffusers_float64() {
    let map = fixtures();
    for snr in [1.0, 3.0] {
        let s = CogVideoXDdim::with_config(&config(snr), 10).unwrap();
        let want: Vec<f64> = map
            .require(&format!("alphas_cumprod.snr{snr}"))
            .unwrap()
            .clone()
            .convert::<f64>()
            .into_vec()
            .unwrap();
        let got = s.alphas_cumprod();
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], 0.0, "zero terminal SNR");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-15 * w.abs().max(1e-300) + 1e-300,
                "snr {snr}: alphas_cumprod[{i}] {g:e} vs {w:e}"
            );
        }
    }
}

#[test]
fn trailing_timesteps_match_diffusers() {
    let map = fixtures();
    for kind in ["ddim", "dpm"] {
        for (snr, steps) in CASES {
            let key = format!("{kind}.snr{snr}.steps{steps}");
            let got = CogVideoXDdim::with_config(&config(snr), steps).unwrap();
            assert_eq!(got.timesteps_i64(), want_timesteps(&map, &key), "{key}");
        }
    }
    let s = CogVideoXDdim::new(50).unwrap();
    assert_eq!(s.timesteps_i64()[0], 999);
    assert_eq!(*s.timesteps_i64().last().unwrap(), 19);
}

#[test]
fn other_spacings_and_bad_step_counts() {
    let lead = CogVideoXScheduleConfig {
        timestep_spacing: TimestepSpacing::Leading,
        ..Default::default()
    };
    let s = CogVideoXDdim::with_config(&lead, 4).unwrap();
    assert_eq!(s.timesteps_i64(), &[750, 500, 250, 0]);
    let lin = CogVideoXScheduleConfig {
        timestep_spacing: TimestepSpacing::Linspace,
        ..Default::default()
    };
    let s = CogVideoXDdim::with_config(&lin, 4).unwrap();
    assert_eq!(s.timesteps_i64(), &[999, 666, 333, 0]);
    assert!(CogVideoXDdim::new(0).is_err());
    assert!(CogVideoXDpm::<B>::new(1001).is_err());
}

fn run(map: &TensorMap, key: &str, sampler: &mut dyn Sampler<B>) {
    let mut x = tensor(map, &format!("{key}.x0"));
    for i in 0..sampler.timesteps().len() {
        let v = tensor(map, &format!("{key}.model_output.{i}"));
        x = sampler.step(v, i, x).unwrap();
        let err = rel_l2(x.clone(), tensor(map, &format!("{key}.sample.{i}")));
        assert!(err < 1e-6, "{key} step {i}: relative L2 error {err:.3e}");
    }
}

#[test]
fn ddim_steps_match_diffusers() {
    let map = fixtures();
    for (snr, steps) in CASES.into_iter().filter(|c| c.1 <= 10) {
        let key = format!("ddim.snr{snr}.steps{steps}");
        let mut s = CogVideoXDdim::with_config(&config(snr), steps).unwrap();
        run(&map, &key, &mut s);
    }
}

#[test]
fn dpm_multistep_steps_match_diffusers_with_its_noise() {
    let map = fixtures();
    for (snr, steps) in CASES.into_iter().filter(|c| c.1 <= 10) {
        let key = format!("dpm.snr{snr}.steps{steps}");
        let mut s = CogVideoXDpm::<B>::with_config(&config(snr), steps).unwrap();
        let mut queued = Vec::new();
        for i in 0..steps {
            queued.push(tensor(&map, &format!("{key}.noise.{i}")));
        }
        // Queue all noise up front (the sampler pops one per step).
        for n in queued {
            s.push_noise(n);
        }
        run(&map, &key, &mut s);
    }
}

#[test]
fn dpm_rejects_out_of_order_steps_and_bad_noise() {
    let device = Default::default();
    let mut s = CogVideoXDpm::<B>::new(4).unwrap();
    let x = Tensor::<B, 5>::ones([1, 1, 1, 1, 2], &device);
    let err = s.step(x.clone(), 1, x.clone()).unwrap_err();
    assert!(err.to_string().contains("expected step 0"), "{err}");
    s.push_noise(Tensor::ones([1, 1, 1, 1, 3], &device));
    assert!(s.step(x.clone(), 0, x.clone()).is_err());
    let mut s = CogVideoXDpm::<B>::new(4).unwrap();
    let y = s.step(x.clone(), 0, x).unwrap();
    let v: Vec<f32> = y.into_data().into_vec().unwrap();
    assert!(
        v.iter().all(|v| v.is_finite()),
        "backend-RNG noise step is finite"
    );
}
