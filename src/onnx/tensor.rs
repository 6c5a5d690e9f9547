//! Reading and writing tensor values, whichever field of `TensorProto` holds them.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
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

fn element_size(data_type: i32) -> Option<usize> {
    use DataType as D;
    Some(match DataType::try_from(data_type).ok()? {
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Float16 | D::Bfloat16 | D::Uint16 | D::Int16 => 2,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        _ => return None,
    })
}

/// Keeps, of each `outer` block of `n x unit` values, the `unit`-runs at positions `keep`.
fn gather<T: Clone>(values: &[T], n: usize, unit: usize, keep: &[usize]) -> Vec<T> {
    let block = n * unit;
    let mut out = Vec::with_capacity(values.len() / n.max(1) * keep.len());
    for chunk in values.chunks(block.max(1)) {
        for &k in keep {
            out.extend_from_slice(&chunk[k * unit..(k + 1) * unit]);
        }
    }
    out
}

/// `t` without the positions `removed` along `axis`, in its own element type and storage field.
pub fn remove_along(
    t: &TensorProto,
    axis: usize,
    removed: &BTreeSet<usize>,
) -> Result<TensorProto> {
    let n = *t
        .dims
        .get(axis)
        .with_context(|| format!("has no axis {axis} (dims {:?})", t.dims))? as usize;
    if let Some(&last) = removed.last() {
        ensure!(last < n, "position {last} is outside axis {axis} of {n}");
    }
    let inner = numel(&t.dims[axis + 1..])?;
    let total = numel(&t.dims)?;
    let keep: Vec<usize> = (0..n).filter(|k| !removed.contains(k)).collect();
    let mut out = t.clone();
    out.dims[axis] = keep.len() as i64;
    if let Some(raw) = &t.raw_data {
        let size = element_size(t.data_type())
            .with_context(|| format!("cannot slice {} data", type_name(t)))?;
        ensure!(
            raw.len() == total * size,
            "raw_data length does not match dims"
        );
        out.raw_data = Some(gather(&raw[..], n, inner * size, &keep).into());
        return Ok(out);
    }
    let check = |len: usize| {
        ensure!(len == total, "holds {len} values, dims need {total}");
        Ok(())
    };
    if !t.float_data.is_empty() {
        check(t.float_data.len())?;
        out.float_data = gather(&t.float_data, n, inner, &keep);
    } else if !t.int32_data.is_empty() {
        check(t.int32_data.len())?;
        out.int32_data = gather(&t.int32_data, n, inner, &keep);
    } else if !t.int64_data.is_empty() {
        check(t.int64_data.len())?;
        out.int64_data = gather(&t.int64_data, n, inner, &keep);
    } else if !t.double_data.is_empty() {
        check(t.double_data.len())?;
        out.double_data = gather(&t.double_data, n, inner, &keep);
    } else if !t.uint64_data.is_empty() {
        check(t.uint64_data.len())?;
        out.uint64_data = gather(&t.uint64_data, n, inner, &keep);
    } else if total != 0 {
        bail!("holds no inline data (external data must be loaded first)");
    }
    Ok(out)
}

/// `t` with the positions `zeroed` along `axis` set to 0 (a floating-point tensor).
pub fn zero_along(t: &TensorProto, axis: usize, zeroed: &BTreeSet<usize>) -> Result<TensorProto> {
    let n = *t
        .dims
        .get(axis)
        .with_context(|| format!("has no axis {axis} (dims {:?})", t.dims))? as usize;
    let inner = numel(&t.dims[axis + 1..])?;
    let mut values = to_f32(t)?;
    for (i, v) in values.iter_mut().enumerate() {
        if zeroed.contains(&((i / inner.max(1)) % n.max(1))) {
            *v = 0.0;
        }
    }
    let mut out = t.clone();
    set_f32(&mut out, values)?;
    Ok(out)
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

    #[test]
    fn remove_along_slices_each_axis() {
        // [2, 3, 2]: remove position 1 of axis 1.
        let values: Vec<i64> = (0..12).collect();
        let t = from_i64("t", &[2, 3, 2], &values);
        let r = remove_along(&t, 1, &BTreeSet::from([1])).unwrap();
        assert_eq!(r.dims, [2, 2, 2]);
        assert_eq!(to_i64(&r).unwrap(), [0, 1, 4, 5, 6, 7, 10, 11]);
        let r = remove_along(&t, 0, &BTreeSet::from([0])).unwrap();
        assert_eq!(to_i64(&r).unwrap(), (6..12).collect::<Vec<_>>());
        let r = remove_along(&t, 2, &BTreeSet::from([0])).unwrap();
        assert_eq!(to_i64(&r).unwrap(), [1, 3, 5, 7, 9, 11]);
        assert!(remove_along(&t, 1, &BTreeSet::from([3])).is_err());
        assert!(remove_along(&t, 3, &BTreeSet::new()).is_err());
    }

    #[test]
    fn remove_along_keeps_typed_fields() {
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float as i32),
            float_data: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        let r = remove_along(&t, 0, &BTreeSet::from([0, 2])).unwrap();
        assert_eq!(r.float_data, [2.0]);
        assert!(r.raw_data.is_none());
    }

    #[test]
    fn zero_along_zeroes_whole_slices() {
        let t = from_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let z = zero_along(&t, 1, &BTreeSet::from([0])).unwrap();
        assert_eq!(to_f32(&z).unwrap(), [0.0, 2.0, 0.0, 4.0]);
    }
}
