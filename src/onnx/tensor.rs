//! Reading and writing tensor values, whichever field of `TensorProto` holds them.

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use super::mapping;
use super::proto::tensor_proto::DataType;
use super::proto::{TensorProto, ValueInfoProto};

/// Number of elements described by `dims` (1 for a scalar).
pub fn numel(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        let d =
            usize::try_from(d).with_context(|| format!("negative dimension {d} in {dims:?}"))?;
        acc.checked_mul(d)
            .with_context(|| format!("tensor dimensions {dims:?} overflow"))
    })
}

/// The element type of a tensor, as a name for messages.
pub fn type_name(t: &TensorProto) -> String {
    DataType::try_from(t.data_type()).map_or_else(
        |_| format!("type {}", t.data_type()),
        |d| d.as_str_name().to_string(),
    )
}

fn expect_len(t: &TensorProto, got: usize, want: usize) -> Result<()> {
    if got != want {
        bail!(
            "tensor {:?} holds {got} values but its dims {:?} need {want}",
            t.name(),
            t.dims
        );
    }
    Ok(())
}

/// The values of a FLOAT, FLOAT16 or DOUBLE tensor as f32.
pub fn to_f32(t: &TensorProto) -> Result<Vec<f32>> {
    let n = numel(&t.dims)?;
    let values = match DataType::try_from(t.data_type()) {
        Ok(DataType::Float) => match &t.raw_data {
            Some(raw) => le_chunks::<4>(t, raw, n)?.map(f32::from_le_bytes).collect(),
            None => t.float_data.clone(),
        },
        Ok(DataType::Float16) => match &t.raw_data {
            Some(raw) => le_chunks::<2>(t, raw, n)?
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
            // FLOAT16 values without raw_data are stored one per int32_data entry (low 16 bits).
            None => t
                .int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f32())
                .collect(),
        },
        Ok(DataType::Double) => match &t.raw_data {
            Some(raw) => le_chunks::<8>(t, raw, n)?
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            None => t.double_data.iter().map(|&v| v as f32).collect(),
        },
        _ => bail!(
            "tensor {:?} is {}, not a floating-point tensor",
            t.name(),
            type_name(t)
        ),
    };
    expect_len(t, values.len(), n)?;
    Ok(values)
}

/// Replaces the values of a FLOAT, FLOAT16 or DOUBLE tensor, keeping its element type and the
/// field it stores values in (`raw_data` or the typed field). The pages of the old `raw_data`
/// are handed back when it was part of a mapped file ([`mapping::release`]).
pub fn set_f32(t: &mut TensorProto, values: Vec<f32>) -> Result<()> {
    expect_len(t, values.len(), numel(&t.dims)?)?;
    let raw = match (DataType::try_from(t.data_type()), t.raw_data.is_some()) {
        (Ok(DataType::Float), true) => Some(f32_le_bytes(values)),
        (Ok(DataType::Float), false) => {
            t.float_data = values;
            None
        }
        (Ok(DataType::Float16), true) => Some(le_bytes(
            values.iter().map(|&v| half::f16::from_f32(v).to_le_bytes()),
        )),
        (Ok(DataType::Float16), false) => {
            t.int32_data = values
                .iter()
                .map(|&v| i32::from(half::f16::from_f32(v).to_bits()))
                .collect();
            None
        }
        (Ok(DataType::Double), true) => {
            Some(le_bytes(values.iter().map(|&v| f64::from(v).to_le_bytes())))
        }
        (Ok(DataType::Double), false) => {
            t.double_data = values.iter().map(|&v| f64::from(v)).collect();
            None
        }
        _ => bail!(
            "tensor {:?} is {}, not a floating-point tensor",
            t.name(),
            type_name(t)
        ),
    };
    if let Some(old) = raw.and_then(|raw| t.raw_data.replace(raw)) {
        mapping::release(&old);
    }
    Ok(())
}

/// How many values of a FLOAT, FLOAT16 or DOUBLE tensor are zero (either sign), read from its
/// bytes without decoding them.
pub fn count_zeros(t: &TensorProto) -> Result<u64> {
    let n = numel(&t.dims)?;
    let zeros = match DataType::try_from(t.data_type()) {
        Ok(DataType::Float) => match &t.raw_data {
            Some(raw) => le_chunks::<4>(t, raw, n)?
                .map(|b| usize::from(u32::from_le_bytes(b) << 1 == 0))
                .sum(),
            None => t.float_data.iter().filter(|v| **v == 0.0).count(),
        },
        Ok(DataType::Float16) => match &t.raw_data {
            Some(raw) => le_chunks::<2>(t, raw, n)?
                .map(|b| usize::from(u16::from_le_bytes(b) << 1 == 0))
                .sum(),
            None => t
                .int32_data
                .iter()
                .filter(|v| (**v as u16) << 1 == 0)
                .count(),
        },
        _ => to_f32(t)?.iter().filter(|v| **v == 0.0).count(),
    };
    Ok(zeros as u64)
}

/// The values of an INT64 or INT32 tensor as i64 (shape constants, split sizes, indices).
pub fn to_i64(t: &TensorProto) -> Result<Vec<i64>> {
    let n = numel(&t.dims)?;
    let values: Vec<i64> = match DataType::try_from(t.data_type()) {
        Ok(DataType::Int64) => match &t.raw_data {
            Some(raw) => le_chunks::<8>(t, raw, n)?.map(i64::from_le_bytes).collect(),
            None => t.int64_data.clone(),
        },
        Ok(DataType::Int32) => match &t.raw_data {
            Some(raw) => le_chunks::<4>(t, raw, n)?
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
            None => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        },
        _ => bail!(
            "tensor {:?} is {}, not an integer tensor",
            t.name(),
            type_name(t)
        ),
    };
    expect_len(t, values.len(), n)?;
    Ok(values)
}

/// A FLOAT tensor with `raw_data`.
pub fn from_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(le_bytes(values.iter().map(|v| v.to_le_bytes()))),
        ..Default::default()
    }
}

/// An INT64 tensor with `raw_data`.
pub fn from_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(le_bytes(values.iter().map(|v| v.to_le_bytes()))),
        ..Default::default()
    }
}

/// The `ValueInfoProto` of a FLOAT tensor with a static shape.
pub fn value_info_f32(name: &str, dims: &[i64]) -> ValueInfoProto {
    use super::proto::tensor_shape_proto::{Dimension, dimension};
    use super::proto::{TensorShapeProto, TypeProto, type_proto};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn le_chunks<'a, const N: usize>(
    t: &TensorProto,
    raw: &'a Bytes,
    n: usize,
) -> Result<impl Iterator<Item = [u8; N]> + 'a> {
    if raw.len() != n * N {
        bail!(
            "tensor {:?}: raw_data has {} bytes, dims {:?} of {} need {}",
            t.name(),
            raw.len(),
            t.dims,
            type_name(t),
            n * N
        );
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes")))
}

/// `values` as little-endian bytes, without a copy on little-endian targets.
fn f32_le_bytes(values: Vec<f32>) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::from_owner(F32Bytes(values))
    } else {
        le_bytes(values.iter().map(|v| v.to_le_bytes()))
    }
}

/// A vector of f32 seen as its native-endian bytes.
struct F32Bytes(Vec<f32>);

impl AsRef<[u8]> for F32Bytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

fn le_bytes<const N: usize>(values: impl ExactSizeIterator<Item = [u8; N]>) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * N);
    values.for_each(|v| out.extend_from_slice(&v));
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trips_through_raw_and_typed_fields() {
        let mut t = from_f32("w", &[2, 2], &[1.0, -2.0, 0.5, 0.0]);
        assert_eq!(to_f32(&t).unwrap(), [1.0, -2.0, 0.5, 0.0]);
        set_f32(&mut t, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(to_f32(&t).unwrap(), [0.0, 1.0, 2.0, 3.0]);
        let mut typed = TensorProto {
            dims: vec![2],
            data_type: Some(1),
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        set_f32(&mut typed, vec![3.0, 4.0]).unwrap();
        assert_eq!(typed.float_data, [3.0, 4.0]);
        assert!(typed.raw_data.is_none());
    }

    #[test]
    fn zeros_of_either_sign_are_counted_in_every_form() {
        let values = [0.0, -0.0, 1e-30, -2.0];
        let raw = from_f32("w", &[4], &values);
        assert_eq!(count_zeros(&raw).unwrap(), 2);
        let typed = TensorProto {
            raw_data: None,
            float_data: values.to_vec(),
            ..raw.clone()
        };
        assert_eq!(count_zeros(&typed).unwrap(), 2);
        // FLOAT16 +0, -0, the smallest subnormal, 1.0.
        let half = TensorProto {
            dims: vec![4],
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(Bytes::from_static(&[0, 0, 0, 0x80, 1, 0, 0, 0x3c])),
            ..Default::default()
        };
        assert_eq!(count_zeros(&half).unwrap(), 2);
        let double = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Double as i32),
            double_data: vec![-0.0, 3.0],
            ..Default::default()
        };
        assert_eq!(count_zeros(&double).unwrap(), 1);
    }

    #[test]
    fn wrong_length_and_type_are_errors() {
        let mut t = from_f32("w", &[3], &[1.0, 2.0]);
        assert!(to_f32(&t).unwrap_err().to_string().contains("need 12"));
        t.data_type = Some(DataType::Int8 as i32);
        assert!(to_f32(&t).unwrap_err().to_string().contains("INT8"));
    }

    #[test]
    fn float16_values_convert() {
        let mut t = TensorProto {
            dims: vec![2],
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(Bytes::from_static(&[0, 0x3c, 0, 0xc0])),
            ..Default::default()
        };
        assert_eq!(to_f32(&t).unwrap(), [1.0, -2.0]);
        set_f32(&mut t, vec![0.5, 0.0]).unwrap();
        assert_eq!(to_f32(&t).unwrap(), [0.5, 0.0]);
    }
}
