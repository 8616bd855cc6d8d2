//! Quality of a sparse-attention plan: the same prompts and seeds generated dense and
//! with the plan, planned frames compared with dense frames (PSNR and SSIM on the 8-bit
//! RGB frames, scikit-image definitions: `vdit_video::metrics`), per prompt and mean;
//! reported as JSON, Markdown and a PNG chart.
//!
//! **LPIPS** needs a trained network (AlexNet/VGG features plus LPIPS' linear heads)
//! that this project does not ship or port; reports say it is absent.
//!
//! **Chart:** two panels drawn with `plotters`' bitmap backend and encoded with `png`:
//! left, one bar per prompt for PSNR in dB (scale 0 to the largest finite value, at
//! least 50 dB; grid lines every 10 dB; an identical video, PSNR = inf, is a full-height
//! grey bar); right, one bar per prompt for SSIM (scale 0 to 1, grid lines every 0.1).
//! The chart has no text: plotters draws text only through system fonts (`font-kit`)
//! or a process-wide font registration, neither of which a library or a fresh CI
//! machine should depend on; the Markdown report carries the legend and the numbers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use plotters::prelude::*;
use serde_json::{Value, json};
use vdit_models::ModelBackend;
use vdit_patterns::Plan;
use vdit_video::{Video, video_psnr_ssim};

use crate::wan_t2v::{T2vOutput, T2vProgress, T2vRequest, WanT2vPipeline};
use crate::{PipelineError, Result};

/// Prompts of the built-in quality set (used with tiny random weights, or when no
/// prompt file is given).
pub const BUILTIN_PROMPTS: [&str; 3] = [
    "a red fox runs through fresh snow",
    "waves roll onto a sandy beach at sunset",
    "a city street at night with neon signs and rain",
];

/// Largest prompt file read.
pub const MAX_PROMPTS_BYTES: u64 = 1 << 20;

/// Parses a prompt file: one prompt per line; blank lines and lines starting with `#`
/// are skipped.
///
/// # Errors
/// No prompt at all.
pub fn parse_prompts(text: &str) -> Result<Vec<String>> {
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if prompts.is_empty() {
        return Err(PipelineError::Input(
            "the prompt file has no prompt (one per line; `#` starts a comment)".into(),
        ));
    }
    Ok(prompts)
}

/// Reads a prompt file ([`parse_prompts`], at most [`MAX_PROMPTS_BYTES`]).
///
/// # Errors
/// An unreadable or too large file, no prompt (naming the file).
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = vdit_patterns::read_text_capped(path, MAX_PROMPTS_BYTES).map_err(|e| {
        PipelineError::File {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    parse_prompts(&text).map_err(|e| PipelineError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// One prompt's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptQuality {
    /// The prompt.
    pub prompt: String,
    /// The seed of both runs.
    pub seed: u64,
    /// Mean over frames of the per-frame PSNR (dB) of planned vs dense; `inf` when the
    /// videos are identical.
    pub psnr_db: f64,
    /// Mean over frames of the per-frame SSIM (mean over RGB channels, 7x7 window).
    pub ssim: f64,
    /// Wall time of the dense run (s).
    pub dense_s: f64,
    /// Wall time of the planned run (s).
    pub planned_s: f64,
}

/// The report of a quality run.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// What ran (e.g. a pipeline folder or `wan-tiny (random weights)`).
    pub model: String,
    /// The plan (its file).
    pub plan: String,
    /// Frames, height, width of each video.
    pub video: [usize; 3],
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Per prompt.
    pub prompts: Vec<PromptQuality>,
}

impl QualityReport {
    /// Mean PSNR over prompts (`inf` when every video is identical, or any is).
    pub fn mean_psnr_db(&self) -> f64 {
        mean(self.prompts.iter().map(|p| p.psnr_db))
    }

    /// Mean SSIM over prompts.
    pub fn mean_ssim(&self) -> f64 {
        mean(self.prompts.iter().map(|p| p.ssim))
    }

    /// The JSON report. Non-finite numbers are strings (`"inf"`, `"nan"`): JSON has no
    /// infinity.
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "plan": self.plan,
            "video": { "frames": self.video[0], "height": self.video[1], "width": self.video[2] },
            "steps": self.steps,
            "guidance": self.guidance,
            "metrics": "planned vs dense frames, 8-bit RGB; PSNR and SSIM per frame (scikit-image definitions: data_range 255, 7x7 uniform window, channel mean), averaged over frames, then over prompts",
            "lpips": Value::Null,
            "lpips_note": LPIPS_NOTE,
            "mean": { "psnr_db": num(self.mean_psnr_db()), "ssim": num(self.mean_ssim()) },
            "prompts": self.prompts.iter().map(|p| json!({
                "prompt": p.prompt,
                "seed": p.seed,
                "psnr_db": num(p.psnr_db),
                "ssim": num(p.ssim),
                "dense_s": p.dense_s,
                "planned_s": p.planned_s,
            })).collect::<Vec<_>>(),
        })
    }

    /// The Markdown report; `chart` is the chart's file name to link.
    pub fn to_markdown(&self, chart: Option<&str>) -> String {
        let mut s = String::new();
        s.push_str("# Sparse vs dense quality\n\n");
        s.push_str(&format!(
            "Model: {}. Plan: `{}`. {} frames of {}x{}, {} steps, guidance {}.\n\n",
            self.model,
            self.plan,
            self.video[0],
            self.video[2],
            self.video[1],
            self.steps,
            self.guidance
        ));
        s.push_str(
            "Planned frames against dense frames with the same prompt and seed (8-bit RGB; \
             PSNR and SSIM per frame as scikit-image computes them, averaged over frames).\n\n",
        );
        s.push_str("| # | prompt | seed | PSNR (dB) | SSIM | dense s | planned s |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for (i, p) in self.prompts.iter().enumerate() {
            s.push_str(&format!(
                "| {i} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
                p.prompt.replace('|', "\\|"),
                p.seed,
                fmt(p.psnr_db, 2),
                fmt(p.ssim, 4),
                p.dense_s,
                p.planned_s
            ));
        }
        s.push_str(&format!(
            "| | **mean** | | **{}** | **{}** | | |\n\n",
            fmt(self.mean_psnr_db(), 2),
            fmt(self.mean_ssim(), 4)
        ));
        s.push_str(&format!("LPIPS: absent. {LPIPS_NOTE}\n\n"));
        if let Some(chart) = chart {
            s.push_str(&format!(
                "![chart]({chart})\n\nChart (no text, see the table): left panel PSNR per \
                 prompt, one bar each in table order, 0 at the bottom to the largest finite \
                 PSNR (at least 50 dB) at the top, grid lines every 10 dB, a grey full-height \
                 bar for identical videos (inf); right panel SSIM per prompt, 0 to 1, grid \
                 lines every 0.1.\n"
            ));
        }
        s
    }
}

const LPIPS_NOTE: &str = "LPIPS needs a trained network (AlexNet/VGG features and LPIPS' \
                          linear layers) that is not ported; PSNR and SSIM only.";

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("nan")
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        format!("{x}")
    }
}

/// The chart as PNG bytes (see the module docs for what it shows).
///
/// # Errors
/// Drawing or encoding failures.
pub fn chart_png(report: &QualityReport) -> Result<Vec<u8>> {
    const W: u32 = 640;
    const H: u32 = 320;
    let mut rgb = vec![255u8; (W * H * 3) as usize];
    let draw_err =
        |e: &dyn std::fmt::Display| PipelineError::Input(format!("drawing the chart: {e}"));
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let (left, right) = root.split_horizontally(W / 2);
        let psnr_max = report
            .prompts
            .iter()
            .map(|p| p.psnr_db)
            .filter(|v| v.is_finite())
            .fold(50.0f64, f64::max);
        let bars_psnr: Vec<(f64, bool)> = report
            .prompts
            .iter()
            .map(|p| {
                if p.psnr_db.is_infinite() && p.psnr_db > 0.0 {
                    (1.0, true)
                } else {
                    ((p.psnr_db / psnr_max).clamp(0.0, 1.0), false)
                }
            })
            .collect();
        let bars_ssim: Vec<(f64, bool)> = report
            .prompts
            .iter()
            .map(|p| (p.ssim.clamp(0.0, 1.0), false))
            .collect();
        panel(&left, &bars_psnr, 10.0 / psnr_max, &BLUE).map_err(|e| draw_err(&e))?;
        panel(&right, &bars_ssim, 0.1, &RED).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    Ok(vdit_video::encode_png_rgb(W as usize, H as usize, &rgb)?)
}

/// One panel: a frame, horizontal grid lines every `grid` (in 0..1 units), one bar per
/// value (fraction of the height; `true` = drawn grey, an infinite value).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    bars: &[(f64, bool)],
    grid: f64,
    color: &RGBColor,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let (x0, x1, y0, y1) = (20, w - 20, 20, h - 20);
    let y_of = |f: f64| y1 - ((y1 - y0) as f64 * f).round() as i32;
    let n = bars.len().max(1) as i32;
    let slot = (x1 - x0) / n;
    for (i, &(f, inf)) in bars.iter().enumerate() {
        let left = x0 + slot * i as i32 + slot / 6;
        let right = x0 + slot * (i as i32 + 1) - slot / 6;
        let fill = if inf { RGBColor(150, 150, 150) } else { *color };
        area.draw(&Rectangle::new(
            [(left, y_of(f)), (right, y1)],
            fill.filled(),
        ))?;
    }
    // Grid lines over the bars, light enough to read both.
    if grid > 0.0 && grid.is_finite() {
        let mut g = grid;
        while g < 1.0 - 1e-9 {
            area.draw(&PathElement::new(
                vec![(x0, y_of(g)), (x1, y_of(g))],
                RGBColor(200, 200, 200),
            ))?;
            g += grid;
        }
    }
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))?;
    Ok(())
}

/// A quality run's settings: `template` gives the size, steps, guidance and negative
/// prompt; prompt `i` runs with seed `seed + i`.
#[derive(Debug, Clone)]
pub struct QualityRequest {
    /// The prompts.
    pub prompts: Vec<String>,
    /// Everything else of each run (its `prompt` and `seed` are replaced).
    pub template: T2vRequest,
    /// Seed of the first prompt.
    pub seed: u64,
    /// What ran, for the report.
    pub model: String,
    /// The plan's name (its file), for the report.
    pub plan_name: String,
}

/// Where a quality run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityProgress {
    /// Run `run` of `runs` (dense and planned of each prompt) advanced.
    Run {
        /// 0-based run index (prompt `run / 2`, planned when odd).
        run: usize,
        /// Runs in all.
        runs: usize,
        /// The stage within the run.
        stage: T2vProgress,
    },
}

/// Both videos of one prompt.
#[derive(Debug, Clone)]
pub struct PromptVideos {
    /// Dense.
    pub dense: T2vOutput,
    /// With the plan.
    pub planned: T2vOutput,
}

/// Generates every prompt dense and with `plan` (same seed), and compares.
///
/// # Errors
/// A plan for another model or step count, no prompt, generation errors.
pub fn run_quality<B: ModelBackend>(
    pipe: &WanT2vPipeline<B>,
    plan: &Plan,
    request: &QualityRequest,
    device: &B::Device,
    mut progress: impl FnMut(QualityProgress),
) -> Result<(QualityReport, Vec<PromptVideos>)> {
    if request.prompts.is_empty() {
        return Err(PipelineError::Input("no prompt to compare".into()));
    }
    let runs = request.prompts.len() * 2;
    let mut rows = Vec::new();
    let mut videos = Vec::new();
    let mut size = [0; 3];
    for (i, prompt) in request.prompts.iter().enumerate() {
        let seed = request.seed.wrapping_add(i as u64);
        let mut r = request.template.clone();
        r.prompt = prompt.clone();
        r.seed = seed;
        let t = Instant::now();
        let dense = pipe.generate(&r, None, device, |stage| {
            progress(QualityProgress::Run {
                run: 2 * i,
                runs,
                stage,
            })
        })?;
        let dense_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let planned = pipe.generate(&r, Some(plan), device, |stage| {
            progress(QualityProgress::Run {
                run: 2 * i + 1,
                runs,
                stage,
            })
        })?;
        let planned_s = t.elapsed().as_secs_f64();
        let (psnr_db, ssim) = compare(&dense.video, &planned.video)?;
        size = [
            dense.video.frames.len(),
            dense.video.height,
            dense.video.width,
        ];
        rows.push(PromptQuality {
            prompt: prompt.clone(),
            seed,
            psnr_db,
            ssim,
            dense_s,
            planned_s,
        });
        videos.push(PromptVideos { dense, planned });
    }
    Ok((
        QualityReport {
            model: request.model.clone(),
            plan: request.plan_name.clone(),
            video: size,
            steps: request.template.config.steps,
            guidance: request.template.config.guidance_scale,
            prompts: rows,
        },
        videos,
    ))
}

/// PSNR (dB) and SSIM of `test` against `reference`, each the mean over frames.
///
/// # Errors
/// Videos of different sizes.
pub fn compare(reference: &Video, test: &Video) -> Result<(f64, f64)> {
    Ok(video_psnr_ssim(reference, test)?)
}

/// The report files: `json`, with the Markdown and chart beside it (same stem, `.md`,
/// `.png`), and optionally every video's PNG frames under
/// `frames_dir/pNN/{dense,planned}/frame_NNNN.png`.
#[derive(Debug, Clone)]
pub struct QualityFiles {
    /// The JSON report.
    pub json: PathBuf,
    /// A folder for the frames of every video (created if missing).
    pub frames_dir: Option<PathBuf>,
}

impl QualityFiles {
    /// The Markdown report's path (the JSON's with `.md`).
    pub fn markdown(&self) -> PathBuf {
        self.json.with_extension("md")
    }

    /// The chart's path (the JSON's with `.png`).
    pub fn chart(&self) -> PathBuf {
        self.json.with_extension("png")
    }

    /// Every file path written except the frames.
    pub fn report_paths(&self) -> [PathBuf; 3] {
        [self.json.clone(), self.markdown(), self.chart()]
    }

    /// Writes the report (and frames): all staged, then renamed together.
    ///
    /// # Errors
    /// Unwritable paths (naming the file), drawing or encoding failures.
    pub fn write(&self, report: &QualityReport, videos: &[PromptVideos]) -> Result<()> {
        let mut set = vdit_patterns::OutputSet::new();
        let mut stage = |path: &Path, bytes: &[u8]| {
            set.stage(path, bytes).map_err(|e| PipelineError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })
        };
        let chart = self.chart();
        let chart_name = chart.file_name().map(|n| n.to_string_lossy().into_owned());
        let json = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| PipelineError::Input(format!("serialising the report: {e}")))?
            + "\n";
        stage(&self.json, json.as_bytes())?;
        stage(
            &self.markdown(),
            report.to_markdown(chart_name.as_deref()).as_bytes(),
        )?;
        stage(&chart, &chart_png(report)?)?;
        if let Some(dir) = &self.frames_dir {
            for (i, v) in videos.iter().enumerate() {
                for (kind, out) in [("dense", &v.dense), ("planned", &v.planned)] {
                    let sub = dir.join(format!("p{i:02}")).join(kind);
                    std::fs::create_dir_all(&sub).map_err(|e| PipelineError::File {
                        path: sub.clone(),
                        message: e.to_string(),
                    })?;
                    for (f, frame) in out.video.frames.iter().enumerate() {
                        let bytes =
                            vdit_video::encode_png_rgb(out.video.width, out.video.height, frame)?;
                        stage(&sub.join(vdit_video::png_frame_name(f)), &bytes)?;
                    }
                }
            }
        }
        set.commit().map_err(|e| PipelineError::File {
            path: self.json.clone(),
            message: format!("renaming the outputs into place: {e}"),
        })
    }
}
