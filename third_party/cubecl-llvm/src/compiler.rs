//! The LLVM compiler variant of `cubecl-cuda`, present by name only.

use crate::nvptx::ptx_version::PtxVersion;
use cubecl_core::Compiler;
use cubecl_core::ir::amd::GfxArch;
use cubecl_core::ir::nvidia::SmArch;
use cubecl_core::prelude::KernelDefinition;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::CompilationError;
use cubecl_runtime::kernel::BufferIOAttr;

/// What the LLVM backend would compile for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// Host code.
    #[default]
    Cpu,
    /// NVIDIA PTX.
    Nvptx,
}

/// Options of the LLVM backend; accepted and ignored.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture (unused).
    pub arch: Option<GfxArch>,
    /// NVIDIA architecture (unused).
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit (unused).
    pub ptx_version: Option<PtxVersion>,
    /// Kernel parameters as grid constants (unused).
    pub grid_constants: bool,
}

/// A compiled PTX module. Never produced here; the type exists because `cubecl-cuda`
/// names it in an enum variant.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX text.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point.
    pub entrypoint: String,
    /// IR, for logs and cache keys.
    pub ir: String,
    /// Shared memory per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM backend would return.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// A PTX module.
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(module) => f.write_str(&module.ir),
        }
    }
}

/// The LLVM compiler. Every `compile` fails: this build has no LLVM backend.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    /// The target it was configured for.
    pub target: LlvmTarget,
}

/// The message of every compilation through this stand-in.
pub const NOT_BUILT_IN: &str = "the CubeCL LLVM backend is not built into this program (the \
     offline cubecl-llvm stand-in replaces it); select the C++ backend (cubecl-cuda feature \
     `cpp`, which Sparse-vDiT enables)";

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn buffer_io(repr: &Self::Representation) -> Option<Vec<BufferIOAttr>> {
        match repr {
            PlironArtifact::NvptxCode(module) => Some(module.io.clone()),
        }
    }

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        Err(CompilationError::Generic {
            reason: NOT_BUILT_IN.to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}
