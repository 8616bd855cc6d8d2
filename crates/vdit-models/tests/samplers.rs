//! Samplers against diffusers (fixtures from `tools/fixtures_wan.py`): schedules and
//! several steps on fixed model outputs.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use vdit_models::io::TensorMap;
use vdit_models::samplers::{FlowMatchEuler, Sampler, UniPcFlow, cfg};

type B = Flex;

fn fixtures() -> TensorMap {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samplers.safetensors");
    TensorMap::read(&p).unwrap()
}

fn tensor(map: &TensorMap, key: &str) -> Tensor<B, 5> {
    map.float(key, DType::F32, &Default::default()).unwrap()
}

fn rel_l2(a: Tensor<B, 5>, b: Tensor<B, 5>) -> f64 {
    let num: f64 = (a - b.clone()).square().sum().into_scalar().into();
    let den: f64 = b.square().sum().into_scalar().into();
    (num / den).sqrt()
}

fn run_steps(map: &TensorMap, key: &str, sampler: &mut dyn Sampler<B>) {
    let mut x = tensor(map, &format!("{key}.x0"));
    for i in 0..sampler.timesteps().len() {
        let v = tensor(map, &format!("{key}.model_output.{i}"));
        x = sampler.step(v, i, x).unwrap();
        let want = tensor(map, &format!("{key}.sample.{i}"));
        let err = rel_l2(x.clone(), want);
        assert!(err < 2e-6, "{key} step {i}: relative L2 error {err:.3e}");
    }
}

#[test]
fn flow_euler_schedules_and_steps_match_diffusers() {
    let map = fixtures();
    for (shift, steps) in [(1.0, 6), (3.0, 10), (7.0, 4)] {
        let key = format!("flow_euler.shift{shift}.steps{steps}");
        let mut s = FlowMatchEuler::new(steps, shift).unwrap();
        let want_t = map.values_f32(&format!("{key}.timesteps")).unwrap();
        let want_s = map.values_f32(&format!("{key}.sigmas")).unwrap();
        assert_eq!(
            Sampler::<B>::timesteps(&s),
            want_t.as_slice(),
            "{key} timesteps"
        );
        assert_eq!(s.sigmas(), want_s.as_slice(), "{key} sigmas");
        run_steps(&map, &key, &mut s);
    }
}

#[test]
fn unipc_flow_schedules_and_multistep_updates_match_diffusers() {
    let map = fixtures();
    for (shift, steps) in [(3.0, 8), (5.0, 5), (3.0, 2)] {
        let key = format!("unipc.shift{shift}.steps{steps}");
        let mut s = UniPcFlow::<B>::new(steps, shift).unwrap();
        let want_t = map.values_f32(&format!("{key}.timesteps")).unwrap();
        let want_s = map.values_f32(&format!("{key}.sigmas")).unwrap();
        assert_eq!(s.timesteps(), want_t.as_slice(), "{key} integer timesteps");
        assert_eq!(s.sigmas(), want_s.as_slice(), "{key} sigmas");
        run_steps(&map, &key, &mut s);
    }
}

#[test]
fn unipc_rejects_out_of_order_steps() {
    let device = Default::default();
    let mut s = UniPcFlow::<B>::new(4, 3.0).unwrap();
    let x = Tensor::<B, 5>::ones([1, 1, 1, 1, 2], &device);
    let err = s.step(x.clone(), 1, x).unwrap_err();
    assert!(err.to_string().contains("expected step 0"), "{err}");
}

#[test]
fn cfg_is_uncond_plus_scale_times_difference() {
    let device = Default::default();
    let u = Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
    let c = Tensor::<B, 1>::from_floats([3.0, 0.0], &device);
    let g: Vec<f32> = cfg(u, c, 5.0).into_data().into_vec().unwrap();
    assert_eq!(g, vec![11.0, -8.0]);
}
