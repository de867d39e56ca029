//! Tensors as they travel through a node: named, shaped, typed element
//! vectors in the OIP v2 datatypes of SPEC section 5.

use std::fmt;

use half::f16;

/// The one table of the element types gpumesh serves: the variant (of both
/// [`DataType`] and [`TensorData`]), its wire code, its OIP v2 name and its
/// Rust element type. Everything that maps between them is generated from
/// it. Wire codes are written into forwarded requests and stored jobs:
/// never renumber one; a new type takes a new code (a test pins them).
macro_rules! datatypes {
    ($($variant:ident = $code:literal, $name:literal, $element:ty;)*) => {
        /// An element type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DataType {
            $($variant,)*
        }

        impl DataType {
            /// Every supported type, in the order of the table.
            pub const ALL: [DataType; [$($code),*].len()] = [$(DataType::$variant,)*];

            /// The OIP v2 name (`FP32`, `INT64`, ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The stable code of this type on the wire and on disk.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The type of a wire code.
            pub fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// Bytes per element in the binary tensor extension.
            pub fn size_bytes(self) -> usize {
                match self {
                    $(Self::$variant => std::mem::size_of::<$element>(),)*
                }
            }
        }

        /// Elements of one tensor, row-major.
        #[derive(Clone, Debug, PartialEq)]
        pub enum TensorData {
            $($variant(Vec<$element>),)*
        }

        impl TensorData {
            /// An empty vector of `datatype` with room for `capacity` elements.
            pub fn with_capacity(datatype: DataType, capacity: usize) -> Self {
                match datatype {
                    $(DataType::$variant => Self::$variant(Vec::with_capacity(capacity)),)*
                }
            }

            pub fn datatype(&self) -> DataType {
                match self {
                    $(Self::$variant(_) => DataType::$variant,)*
                }
            }

            fn decode_le(datatype: DataType, bytes: &[u8]) -> Result<Self, TensorError> {
                Ok(match datatype {
                    $(DataType::$variant => Self::$variant(decode_elements(bytes)?),)*
                })
            }

            fn encode_le(&self, out: &mut Vec<u8>) {
                match self {
                    $(Self::$variant(v) => v.iter().for_each(|x| x.write_le(out)),)*
                }
            }

            /// Elements `start..end` as a new vector.
            pub fn slice(&self, start: usize, end: usize) -> Self {
                match self {
                    $(Self::$variant(v) => Self::$variant(v[start..end].to_vec()),)*
                }
            }

            /// Appends `other`, which must have the same datatype.
            pub fn extend(&mut self, other: &Self) -> Result<(), TensorError> {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => a.extend_from_slice(b),)*
                    _ => return Err(TensorError::MixedTypes),
                }
                Ok(())
            }
        }
    };
}

datatypes! {
    Bool = 0, "BOOL", bool;
    Uint8 = 1, "UINT8", u8;
    Int8 = 2, "INT8", i8;
    Int16 = 3, "INT16", i16;
    Int32 = 4, "INT32", i32;
    Int64 = 5, "INT64", i64;
    Fp16 = 6, "FP16", f16;
    Fp32 = 7, "FP32", f32;
    Fp64 = 8, "FP64", f64;
}

impl DataType {
    /// Parses an OIP v2 datatype name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dt| dt.as_str() == name)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An element as little-endian bytes (the binary tensor extension layout).
trait Element: Sized {
    fn read_le(bytes: &[u8]) -> Result<Self, TensorError>;
    fn write_le(&self, out: &mut Vec<u8>);
}

macro_rules! numeric_elements {
    ($($element:ty),*) => {$(
        impl Element for $element {
            fn read_le(bytes: &[u8]) -> Result<Self, TensorError> {
                Ok(<$element>::from_le_bytes(bytes.try_into().unwrap_or_default()))
            }
            fn write_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

numeric_elements!(u8, i8, i16, i32, i64, f16, f32, f64);

impl Element for bool {
    fn read_le(bytes: &[u8]) -> Result<Self, TensorError> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(TensorError::BadBool(other.first().copied().unwrap_or_default())),
        }
    }
    fn write_le(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

fn decode_elements<T: Element>(bytes: &[u8]) -> Result<Vec<T>, TensorError> {
    bytes.chunks_exact(std::mem::size_of::<T>()).map(T::read_le).collect()
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

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes little-endian bytes (the binary tensor extension layout).
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self, TensorError> {
        if !bytes.len().is_multiple_of(datatype.size_bytes()) {
            return Err(TensorError::RaggedBytes { bytes: bytes.len(), datatype });
        }
        Self::decode_le(datatype, bytes)
    }

    /// Appends the elements as little-endian bytes to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * self.datatype().size_bytes());
        self.encode_le(out);
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
    fn wire_codes_are_pinned() {
        // Forwarded requests and stored jobs carry these codes: changing one
        // breaks every peer of another version and every job on disk.
        let pinned = [
            (DataType::Bool, 0, "BOOL", 1),
            (DataType::Uint8, 1, "UINT8", 1),
            (DataType::Int8, 2, "INT8", 1),
            (DataType::Int16, 3, "INT16", 2),
            (DataType::Int32, 4, "INT32", 4),
            (DataType::Int64, 5, "INT64", 8),
            (DataType::Fp16, 6, "FP16", 2),
            (DataType::Fp32, 7, "FP32", 4),
            (DataType::Fp64, 8, "FP64", 8),
        ];
        assert_eq!(DataType::ALL.len(), pinned.len());
        for (datatype, code, name, size) in pinned {
            assert_eq!((datatype.code(), datatype.as_str(), datatype.size_bytes()), (code, name, size), "{datatype:?}");
            assert_eq!(DataType::from_code(code), Some(datatype));
        }
        assert_eq!(DataType::from_code(9), None);
        assert_eq!(DataType::from_code(u8::MAX), None);
    }

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
