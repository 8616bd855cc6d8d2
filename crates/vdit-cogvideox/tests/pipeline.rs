//! The denoising loop against diffusers' `CogVideoXPipeline` (prompt embeds given, no
//! VAE, `output_type="latent"`): DPM + dynamic CFG with an odd latent frame count padded
//! by the pipeline, DDIM + static CFG with an even count. Every step's latents are
//! compared.

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use vdit_cogvideox::CogVideoXTransformer3DModel;
use vdit_cogvideox::pipeline::{Guidance, LatentFrames, denoise};
use vdit_models::samplers::{CogVideoXDdim, CogVideoXDpm, Sampler};

fn run(name: &str, sampler: &mut dyn Sampler<B>, guidance: Guidance, frames: usize) {
    let device = Default::default();
    let model =
        CogVideoXTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    let inp = inputs(name);
    let want_t: Vec<i64> = inp
        .require("timesteps")
        .unwrap()
        .clone()
        .convert::<i64>()
        .into_vec()
        .unwrap();
    let got_t: Vec<i64> = sampler.timesteps().iter().map(|&t| t as i64).collect();
    assert_eq!(got_t, want_t, "{name}: timesteps");

    let lf = LatentFrames::new(frames, 4, model.config.patch_size_t).unwrap();
    let latents: Tensor<B, 5> = inp.float("latents", DType::F32, &device).unwrap();
    let [_, f, _, h, w] = latents.dims();
    assert_eq!(
        f, lf.padded,
        "{name}: the fixture's latents are padded like the pipeline's"
    );
    let pos: Tensor<B, 3> = inp.float("prompt_embeds", DType::F32, &device).unwrap();
    let neg: Tensor<B, 3> = inp
        .float("negative_prompt_embeds", DType::F32, &device)
        .unwrap();
    let ctx = model
        .attention_context(f, h, w, pos.dims()[1], None)
        .unwrap();
    let out = outputs(name);
    let mut worst = 0f64;
    let out_final = denoise(
        &model,
        sampler,
        latents,
        pos,
        Some(neg),
        guidance,
        &ctx,
        &mut |i, x| {
            let want: Tensor<B, 5> = out
                .float(&format!("latents.{i}"), DType::F32, &device)
                .unwrap();
            let err = rel_l2(x.clone(), want);
            worst = worst.max(err);
            assert!(err <= 1e-4, "{name} step {i}: relative L2 error {err:.3e}");
        },
    )
    .unwrap();
    let err = rel_l2(out_final.clone(), expected(name));
    println!("{name}: final relative L2 error {err:.3e} (worst step {worst:.3e})");
    assert!(err <= 1e-4, "{name}: relative L2 error {err:.3e}");
    let cropped = lf.drop_padding(out_final.clone()).unwrap();
    assert_eq!(cropped.dims()[1], lf.latent);
    let tail = out_final.narrow(1, lf.additional, lf.latent);
    assert_eq!(rel_l2(cropped, tail), 0.0);
}

#[test]
fn dpm_dynamic_cfg_odd_latent_frames_matches_pipeline() {
    let name = "pipeline_dpm_dyncfg_odd3";
    let inp = inputs(name);
    let mut s = CogVideoXDpm::<B>::new(4).unwrap();
    for i in 0..4 {
        s.push_noise(
            inp.float(&format!("noise.{i}"), DType::F32, &Default::default())
                .unwrap(),
        );
    }
    // 9 video frames -> 3 latent frames, padded to 4.
    let lf = LatentFrames::new(9, 4, 2).unwrap();
    assert_eq!((lf.latent, lf.padded, lf.additional), (3, 4, 1));
    run(
        name,
        &mut s,
        Guidance {
            scale: 6.0,
            dynamic: true,
        },
        9,
    );
}

#[test]
fn ddim_static_cfg_even_latent_frames_matches_pipeline() {
    let mut s = CogVideoXDdim::new(3).unwrap();
    let lf = LatentFrames::new(5, 4, 2).unwrap();
    assert_eq!((lf.latent, lf.padded, lf.additional), (2, 2, 0));
    run(
        "pipeline_ddim_cfg_even2",
        &mut s,
        Guidance {
            scale: 5.0,
            dynamic: false,
        },
        5,
    );
}

#[test]
fn latent_frames_of_the_real_settings() {
    let l = LatentFrames::new(81, 4, 2).unwrap();
    assert_eq!((l.latent, l.padded, l.additional), (21, 22, 1));
    let l = LatentFrames::new(161, 4, 2).unwrap();
    assert_eq!((l.latent, l.padded, l.additional), (41, 42, 1));
    assert!(LatentFrames::new(0, 4, 2).is_err());
}

#[test]
fn dynamic_guidance_follows_the_pipeline_formula() {
    let g = Guidance {
        scale: 6.0,
        dynamic: true,
    };
    // t is the timestep value: 1 + 6 (1 - cos(pi ((50 - 999)/50)^5)) / 2.
    let x: f64 = (50.0 - 999.0) / 50.0;
    let want = 1.0 + 6.0 * (1.0 - (std::f64::consts::PI * x.powf(5.0)).cos()) / 2.0;
    assert_eq!(g.scale_at(999.0, 50), want);
    assert_eq!(
        Guidance {
            scale: 6.0,
            dynamic: false
        }
        .scale_at(999.0, 50),
        6.0
    );
    assert!(
        !Guidance {
            scale: 1.0,
            dynamic: false
        }
        .enabled()
    );
}

#[test]
fn guidance_without_negative_embeds_is_an_error() {
    let name = "pipeline_ddim_cfg_even2";
    let device = Default::default();
    let model =
        CogVideoXTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    let inp = inputs(name);
    let latents: Tensor<B, 5> = inp.float("latents", DType::F32, &device).unwrap();
    let pos: Tensor<B, 3> = inp.float("prompt_embeds", DType::F32, &device).unwrap();
    let [_, f, _, h, w] = latents.dims();
    let ctx = model
        .attention_context(f, h, w, pos.dims()[1], None)
        .unwrap();
    let mut s = CogVideoXDdim::new(2).unwrap();
    let g = Guidance {
        scale: 6.0,
        dynamic: false,
    };
    let err = denoise(&model, &mut s, latents, pos, None, g, &ctx, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("negative_prompt_embeds"), "{err}");
}

#[test]
fn sampler_kinds_and_initial_latents() {
    use vdit_cogvideox::pipeline::{SamplerKind, initial_latents};
    let s = SamplerKind::parse("DPM").unwrap().build::<B>(50).unwrap();
    assert_eq!(s.timesteps().len(), 50);
    assert_eq!(s.timesteps()[0], 999.0);
    assert!(SamplerKind::parse("euler").is_err());
    let lf = LatentFrames::new(9, 4, 2).unwrap();
    let x = initial_latents::<B>(2, lf, 4, 6, 8, 3, &Default::default());
    assert_eq!(x.dims(), [2, 4, 4, 6, 8]);
}
