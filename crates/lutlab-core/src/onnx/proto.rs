//! The few ONNX protobuf messages the export writes, encoded by hand: protobuf's wire format is
//! a tag (`field << 3 | wire type`) before each value, varints for integers, a length before
//! bytes and nested messages. Field numbers are those of `onnx/onnx.proto` (IR version 10).
//! Repeated integers are written unpacked, which every protobuf parser reads.

/// ONNX's `TensorProto.DataType` values used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int64 = 7,
    Float16 = 10,
    Bfloat16 = 16,
}

impl DataType {
    pub fn bytes(self) -> usize {
        match self {
            DataType::Float => 4,
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int64 => 8,
            DataType::Float16 | DataType::Bfloat16 => 2,
        }
    }
}

/// One message being written.
#[derive(Clone, Debug, Default)]
pub struct Message(Vec<u8>);

const VARINT: u64 = 0;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u64) {
        self.raw_varint(u64::from(field) << 3 | wire);
    }

    /// An integer field (int32/int64/enum; negatives as 10-byte two's complement, as protobuf does).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.tag(field, VARINT);
        self.raw_varint(v as u64);
        self
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.tag(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.tag(field, LENGTH_DELIMITED);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }

    pub fn ints(&mut self, field: u32, values: &[i64]) -> &mut Self {
        values.iter().for_each(|&v| {
            self.int(field, v);
        });
        self
    }
}

/// `TensorProto`: dims (1), data_type (2), name (8), raw_data (9, little-endian).
pub fn tensor(name: &str, data_type: DataType, dims: &[usize], raw: &[u8]) -> Message {
    let mut m = Message::new();
    m.ints(1, &dims.iter().map(|&d| d as i64).collect::<Vec<_>>()).int(2, data_type as i64).string(8, name).bytes(9, raw);
    m
}

/// A dimension of a graph input or output: fixed, or named (dynamic).
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// `ValueInfoProto` of a tensor: name (1), type (2) = `TypeProto.tensor_type` (1) =
/// { elem_type (1), shape (2) = `TensorShapeProto` { dim (1) = { dim_value (1) | dim_param (2) } } }.
pub fn value_info(name: &str, data_type: DataType, dims: &[Dim]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let mut dim = Message::new();
        match d {
            Dim::Fixed(n) => dim.int(1, *n as i64),
            Dim::Named(s) => dim.string(2, s),
        };
        shape.message(1, &dim);
    }
    let mut tensor_type = Message::new();
    tensor_type.int(1, data_type as i64).message(2, &shape);
    let mut type_proto = Message::new();
    type_proto.message(1, &tensor_type);
    let mut m = Message::new();
    m.string(1, name).message(2, &type_proto);
    m
}

/// A node attribute (`AttributeProto`: name (1), f (2), i (3), s (4), ints (8), type (20)).
#[derive(Clone, Debug)]
pub enum Attr {
    Int(&'static str, i64),
    Float(&'static str, f32),
    Ints(&'static str, Vec<i64>),
    Str(&'static str, &'static str),
}

impl Attr {
    fn encode(&self) -> Message {
        let mut m = Message::new();
        match self {
            Attr::Float(name, v) => m.string(1, name).float(2, *v).int(20, 1),
            Attr::Int(name, v) => m.string(1, name).int(3, *v).int(20, 2),
            Attr::Str(name, s) => m.string(1, name).string(4, s).int(20, 3),
            Attr::Ints(name, v) => m.string(1, name).ints(8, v).int(20, 7),
        };
        m
    }
}

/// `NodeProto`: input (1), output (2), name (3), op_type (4), attribute (5).
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) -> Message {
    let mut m = Message::new();
    inputs.iter().for_each(|i| {
        m.string(1, i);
    });
    outputs.iter().for_each(|o| {
        m.string(2, o);
    });
    m.string(3, name).string(4, op_type);
    attrs.iter().for_each(|a| {
        m.message(5, &a.encode());
    });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_tags_follow_the_wire_format() {
        // Examples from protobuf's encoding guide: field 1 = 150 is 08 96 01.
        let mut m = Message::new();
        m.int(1, 150);
        assert_eq!(m.clone().into_bytes(), [0x08, 0x96, 0x01]);
        // A negative int64 is ten bytes; a string is its length and bytes.
        let mut n = Message::new();
        n.int(3, -1).string(2, "ab");
        let b = n.into_bytes();
        assert_eq!(b[0], 0x18);
        assert_eq!(&b[1..11], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(&b[11..], &[0x12, 0x02, b'a', b'b']);
        let mut f = Message::new();
        f.float(2, 1.0);
        assert_eq!(f.into_bytes(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
    }
}
