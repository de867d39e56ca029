//! Tensors as they travel through a node: named, shaped, typed element
//! vectors in the OIP v2 datatypes of SPEC section 5.

use std::fmt;

use half::f16;

/// The element types gpumesh serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
}

impl DataType {
    /// Every supported type, in the order errors list them.
    pub const ALL: [DataType; 9] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// The OIP v2 name (`FP32`, `INT64`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
        }
    }

    /// Parses an OIP v2 datatype name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dt| dt.as_str() == name)
    }

    /// Bytes per element in the binary tensor extension.
    pub fn size_bytes(self) -> usize {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Int16 | Self::Fp16 => 2,
            Self::Int32 | Self::Fp32 => 4,
            Self::Int64 | Self::Fp64 => 8,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Elements of one tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`TensorData`] variant.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp16($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
        }
    };
}

/// Same as [`with_tensor_data`], rebuilding the same variant from `$body`.
macro_rules! map_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp16($v) => TensorData::Fp16($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
        }
    };
}

/// Why bytes or parts do not make a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("{bytes} bytes are not a whole number of {datatype} elements")]
    RaggedBytes { bytes: usize, datatype: DataType },
    #[error("BOOL bytes must be 0 or 1, found {0}")]
    BadBool(u8),
    #[error("shape {shape:?} holds {expected} elements but {found} were given")]
    ShapeMismatch { shape: Vec<usize>, expected: usize, found: usize },
    #[error("shape {0:?} has more elements than can be addressed")]
    ShapeOverflow(Vec<usize>),
    #[error("cannot join tensors of different datatypes")]
    MixedTypes,
}

impl TensorData {
    /// An empty vector of `datatype`.
    pub fn empty(datatype: DataType) -> Self {
        Self::with_capacity(datatype, 0)
    }

    /// An empty vector of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> Self {
        match datatype {
            DataType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => Self::Uint8(Vec::with_capacity(capacity)),
            DataType::Int8 => Self::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(Vec::with_capacity(capacity)),
            DataType::Fp16 => Self::Fp16(Vec::with_capacity(capacity)),
            DataType::Fp32 => Self::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => Self::Fp64(Vec::with_capacity(capacity)),
        }
    }

    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Fp16(_) => DataType::Fp16,
            Self::Fp32(_) => DataType::Fp32,
            Self::Fp64(_) => DataType::Fp64,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes little-endian bytes (the binary tensor extension layout).
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self, TensorError> {
        let size = datatype.size_bytes();
        if !bytes.len().is_multiple_of(size) {
            return Err(TensorError::RaggedBytes { bytes: bytes.len(), datatype });
        }
        macro_rules! decode {
            ($variant:ident, $ty:ty) => {
                TensorData::$variant(
                    bytes.chunks_exact(size).map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
                )
            };
        }
        Ok(match datatype {
            DataType::Bool => Self::Bool(
                bytes
                    .iter()
                    .map(|&b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(TensorError::BadBool(other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => Self::Uint8(bytes.to_vec()),
            DataType::Int8 => decode!(Int8, i8),
            DataType::Int16 => decode!(Int16, i16),
            DataType::Int32 => decode!(Int32, i32),
            DataType::Int64 => decode!(Int64, i64),
            DataType::Fp16 => decode!(Fp16, f16),
            DataType::Fp32 => decode!(Fp32, f32),
            DataType::Fp64 => decode!(Fp64, f64),
        })
    }

    /// Appends the elements as little-endian bytes to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * self.datatype().size_bytes());
        match self {
            Self::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            Self::Uint8(v) => out.extend_from_slice(v),
            Self::Int8(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Int16(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Int32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Int64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Fp16(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Fp32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Self::Fp64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        }
    }

    /// Elements `start..end` as a new vector.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        map_tensor_data!(self, v => v[start..end].to_vec())
    }

    /// Appends `other`, which must have the same datatype.
    pub fn extend(&mut self, other: &Self) -> Result<(), TensorError> {
        macro_rules! join {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => a.extend_from_slice(b),)*
                    _ => return Err(TensorError::MixedTypes),
                }
            };
        }
        join!(Bool, Uint8, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64);
        Ok(())
    }
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |count, &dim| count.checked_mul(dim))
}

/// A named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose data has exactly as many elements as its shape says.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let expected = element_count(&shape).ok_or_else(|| TensorError::ShapeOverflow(shape.clone()))?;
        if expected != data.len() {
            return Err(TensorError::ShapeMismatch { shape, expected, found: data.len() });
        }
        Ok(Self { name: name.into(), shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Rows along axis 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("BYTES"), None);
    }

    #[test]
    fn bytes_round_trip_for_every_type() {
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-3, 300]),
            TensorData::Int32(vec![-70_000, 1]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-0.25)]),
            TensorData::Fp32(vec![1.25, -7.5]),
            TensorData::Fp64(vec![1e300, -0.125]),
        ];
        for data in samples {
            let mut bytes = Vec::new();
            data.write_le_bytes(&mut bytes);
            assert_eq!(bytes.len(), 2 * data.datatype().size_bytes());
            assert_eq!(TensorData::from_le_bytes(data.datatype(), &bytes), Ok(data));
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(matches!(TensorData::from_le_bytes(DataType::Fp32, &[0; 7]), Err(TensorError::RaggedBytes { .. })));
        assert_eq!(TensorData::from_le_bytes(DataType::Bool, &[2]), Err(TensorError::BadBool(2)));
    }

    #[test]
    fn shapes_are_checked() {
        assert!(Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![0.0; 4])).is_ok());
        assert!(matches!(
            Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 4])),
            Err(TensorError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Tensor::new("x", vec![usize::MAX, 2], TensorData::Fp32(Vec::new())),
            Err(TensorError::ShapeOverflow(_))
        ));
        let scalar = Tensor::new("s", vec![], TensorData::Int64(vec![3])).expect("scalar");
        assert_eq!(scalar.rows(), 1);
    }

    #[test]
    fn slice_and_extend_join_rows() {
        let mut a = TensorData::Int32(vec![1, 2, 3, 4]);
        assert_eq!(a.slice(1, 3), TensorData::Int32(vec![2, 3]));
        a.extend(&TensorData::Int32(vec![5])).expect("same type");
        assert_eq!(a.len(), 5);
        assert_eq!(a.extend(&TensorData::Fp32(vec![1.0])), Err(TensorError::MixedTypes));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), index in 0usize..9) {
            let _ = TensorData::from_le_bytes(DataType::ALL[index], &bytes);
        }
    }
}
