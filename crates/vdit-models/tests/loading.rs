//! Weight loading and config reading: dtype conversion, sharding, and errors that name
//! the key.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{DType, TensorData, bf16};
use vdit_models::io::TensorMap;
use vdit_models::nn::Linear;
use vdit_models::safetensors_file::SafetensorsFiles;
use vdit_models::{DiffusersConfig, Init, ModelClass, ModelError, Weights};

type B = Flex;

fn write(path: &Path, tensors: Vec<(&str, TensorData)>) {
    let mut map = TensorMap::default();
    for (k, d) in tensors {
        map.insert(k, d);
    }
    map.write(path).unwrap();
}

fn linear_file(dir: &Path) {
    // PyTorch layout: weight [out=2, in=3].
    write(
        &dir.join("diffusion_pytorch_model.safetensors"),
        vec![
            (
                "proj.weight",
                TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
            ),
            ("proj.bias", TensorData::new(vec![0.5f32, -0.5], [2])),
        ],
    );
}

#[test]
fn linear_is_transposed_from_pytorch_layout() {
    let dir = tempfile::tempdir().unwrap();
    linear_file(dir.path());
    let device = Default::default();
    let w = Weights::<B>::from_model_dir(dir.path(), DType::F32, &device).unwrap();
    let lin = Linear::load(&w.pp("proj"), 3, 2, true).unwrap();
    w.finish(&[]).unwrap();
    let x = burn::tensor::Tensor::<B, 2>::from_floats([[1.0, 0.0, -1.0]], &device);
    let y: Vec<f32> = lin.forward(x).into_data().into_vec().unwrap();
    assert_eq!(y, vec![1.0 - 3.0 + 0.5, 4.0 - 6.0 - 0.5]);
}

#[test]
fn bf16_file_loads_into_f32_and_f32_file_into_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let vals = [1.5f32, -2.25, 3.0];
    write(
        &dir.path().join("w.safetensors"),
        vec![("a", TensorData::new(vals.map(bf16::from_f32).to_vec(), [3]))],
    );
    let device = Default::default();
    let w = Weights::<B>::from_model_dir(dir.path(), DType::F32, &device).unwrap();
    let t = w.get::<1>("a", [3], Init::Zeros).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.into_data().into_vec::<f32>().unwrap(), vals.to_vec());
    let w = Weights::<B>::from_model_dir(dir.path(), DType::BF16, &device).unwrap();
    let t = w.get::<1>("a", [3], Init::Zeros).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    let t32 = w.get_f32::<1>("a", [3], Init::Zeros).unwrap();
    assert_eq!(t32.dtype(), DType::F32);
}

#[test]
fn missing_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    linear_file(dir.path());
    let w = Weights::<B>::from_model_dir(dir.path(), DType::F32, &Default::default()).unwrap();
    let err = Linear::load(&w.pp("other"), 3, 2, true).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingKey { key, .. } if key == "other.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("other.weight"));
}

#[test]
fn wrong_shape_is_an_error_naming_the_key_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    linear_file(dir.path());
    let w = Weights::<B>::from_model_dir(dir.path(), DType::F32, &Default::default()).unwrap();
    let err = Linear::load(&w.pp("proj"), 2, 3, true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("proj.weight") && msg.contains("[3, 2]") && msg.contains("[2, 3]"),
        "{msg}"
    );
}

#[test]
fn unexpected_key_is_an_error_naming_it_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    linear_file(dir.path());
    let w = Weights::<B>::from_model_dir(dir.path(), DType::F32, &Default::default()).unwrap();
    let _ = w.get::<2>("proj.weight", [2, 3], Init::Zeros).unwrap();
    let err = w.finish(&[]).unwrap_err();
    assert!(err.to_string().contains("proj.bias"), "{err}");
    w.finish(&["bias"]).unwrap();
}

#[test]
fn sharded_index_is_checked_against_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("s-1.safetensors"),
        vec![("a", TensorData::new(vec![1f32], [1]))],
    );
    write(
        &d.join("s-2.safetensors"),
        vec![("b", TensorData::new(vec![2f32], [1]))],
    );
    let index = d.join("diffusion_pytorch_model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata":{},"weight_map":{"a":"s-1.safetensors","b":"s-2.safetensors"}}"#,
    )
    .unwrap();
    let files = SafetensorsFiles::open_model_dir(d).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    std::fs::write(
        &index,
        r#"{"weight_map":{"a":"s-2.safetensors","b":"s-2.safetensors"}}"#,
    )
    .unwrap();
    let err = SafetensorsFiles::open_model_dir(d).unwrap_err().to_string();
    assert!(err.contains("`a`"), "{err}");
}

#[test]
fn truncated_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    linear_file(dir.path());
    let p = dir.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    let err =
        Weights::<B>::from_model_dir(dir.path(), DType::F32, &Default::default()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
}

#[test]
fn config_class_detection_and_unknown_class_error() {
    let p = Path::new("config.json");
    let c = DiffusersConfig::from_json_str(
        r#"{"_class_name":"WanTransformer3DModel","num_layers":2}"#,
        p,
    )
    .unwrap();
    assert_eq!(c.model_class().unwrap(), ModelClass::Wan);
    let c =
        DiffusersConfig::from_json_str(r#"{"_class_name":"FluxTransformer2DModel"}"#, p).unwrap();
    let err = c.model_class().unwrap_err().to_string();
    assert!(
        err.contains("FluxTransformer2DModel") && err.contains("WanTransformer3DModel"),
        "{err}"
    );
    assert!(DiffusersConfig::from_json_str("[1]", p).is_err());
}

#[test]
fn tensor_map_round_trips_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.safetensors");
    write(
        &p,
        vec![
            ("i64", TensorData::new(vec![7i64, -1], [2])),
            ("f32", TensorData::new(vec![0.5f32; 6], [2, 3])),
            ("b", TensorData::new(vec![true, false], [2])),
        ],
    );
    let m = TensorMap::read(&p).unwrap();
    assert_eq!(m.values_f32("i64").unwrap(), vec![7.0, -1.0]);
    let t: burn::tensor::Tensor<B, 2> = m.float("f32", DType::F32, &Default::default()).unwrap();
    assert_eq!(t.dims(), [2, 3]);
    assert_eq!(
        m.get("b").unwrap().iter::<bool>().collect::<Vec<_>>(),
        vec![true, false]
    );
    assert!(
        m.float::<B, 3>("f32", DType::F32, &Default::default())
            .is_err()
    );
    assert!(m.require("nope").unwrap_err().to_string().contains("nope"));
}
