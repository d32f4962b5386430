//! [`Dynamic`]: a value that carries its own type, for [`Namespace`](crate::Namespace)
//! attributes.
//!
//! ```text
//! any T: Serialize --to_dynamic--> Dynamic --postcard--> the server (stored as bytes)
//! Dynamic --from_dynamic::<U>--> U, or an error naming what the value is and what U wanted
//! Display: Python's repr: 1, 2.5, 'text', b'bytes', True, None, [1, 2], {'k': 1},
//!          Point(x=1, y=2), Shape::Circle(1.0)
//! ```
//! Integers keep their sign (`Int` or `UInt`) but not their width: a value written as `u8` can
//! be read as any integer type it fits in, as in Python. Everything else must match: a string
//! is not an integer, a struct is read field by field.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use serde::{Deserialize, Deserializer};

/// A value with its type (see the module notes).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[non_exhaustive]
pub enum Dynamic {
    /// `()` and unit structs (Python's `None` when printed).
    Unit,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A character.
    Char(char),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `Option::None`.
    None,
    /// `Option::Some`.
    Some(Box<Dynamic>),
    /// A sequence, tuple or tuple struct.
    Seq(Vec<Dynamic>),
    /// A map.
    Map(Vec<(Dynamic, Dynamic)>),
    /// A struct, by field name.
    Struct {
        /// The struct's name.
        name: String,
        /// Its fields in declaration order.
        fields: Vec<(String, Dynamic)>,
    },
    /// An enum variant with its content (`Unit` for a unit variant).
    Variant {
        /// The enum's name.
        name: String,
        /// The variant's name.
        variant: String,
        /// The variant's content.
        value: Box<Dynamic>,
    },
}

/// Why a value could not become a [`Dynamic`] or a `Dynamic` not the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicError(String);

impl fmt::Display for DynamicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DynamicError {}

impl ser::Error for DynamicError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DynamicError(msg.to_string())
    }
}

impl de::Error for DynamicError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DynamicError(msg.to_string())
    }
}

impl Dynamic {
    /// The dynamic form of `value`.
    ///
    /// ```
    /// use ipc_manager::Dynamic;
    /// assert_eq!(Dynamic::from_value(&(1u8, "a"))?.to_string(), "[1, 'a']"); // tuples are sequences
    /// assert_eq!(Dynamic::from_value(&vec![1.5, 2.0])?.to_string(), "[1.5, 2.0]");
    /// # Ok::<(), ipc_manager::DynamicError>(())
    /// ```
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Dynamic, DynamicError> {
        value.serialize(ToDynamic)
    }

    /// The value as a `T`, or why it is not one.
    ///
    /// ```
    /// use ipc_manager::Dynamic;
    /// let d = Dynamic::from_value(&300u32)?;
    /// assert_eq!(d.to_value::<i64>()?, 300);
    /// assert!(d.to_value::<u8>().is_err()); // does not fit
    /// assert!(d.to_value::<String>().is_err()); // not a string
    /// # Ok::<(), ipc_manager::DynamicError>(())
    /// ```
    pub fn to_value<T: DeserializeOwned>(&self) -> Result<T, DynamicError> {
        T::deserialize(self.clone())
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Dynamic::Unit => "unit",
            Dynamic::Bool(_) => "a boolean",
            Dynamic::Int(_) | Dynamic::UInt(_) => "an integer",
            Dynamic::Float(_) => "a float",
            Dynamic::Char(_) => "a character",
            Dynamic::Str(_) => "a string",
            Dynamic::Bytes(_) => "bytes",
            Dynamic::None | Dynamic::Some(_) => "an option",
            Dynamic::Seq(_) => "a sequence",
            Dynamic::Map(_) => "a map",
            Dynamic::Struct { .. } => "a struct",
            Dynamic::Variant { .. } => "an enum variant",
        }
    }
}

fn write_str_repr(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    for c in s.chars() {
        match c {
            '\'' => f.write_str("\\'")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("'")
}

fn write_list(
    f: &mut fmt::Formatter<'_>,
    items: &[Dynamic],
    open: &str,
    close: &str,
) -> fmt::Result {
    f.write_str(open)?;
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{v}")?;
    }
    f.write_str(close)
}

impl fmt::Display for Dynamic {
    /// Python's `repr` of the equivalent value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dynamic::Unit | Dynamic::None => f.write_str("None"),
            Dynamic::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Dynamic::Int(i) => write!(f, "{i}"),
            Dynamic::UInt(u) => write!(f, "{u}"),
            Dynamic::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 => {
                write!(f, "{x:.1}")
            }
            Dynamic::Float(x) if x.is_nan() => f.write_str("nan"),
            Dynamic::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "inf" } else { "-inf" })
            }
            Dynamic::Float(x) => write!(f, "{x}"),
            Dynamic::Char(c) => write_str_repr(f, &c.to_string()),
            Dynamic::Str(s) => write_str_repr(f, s),
            Dynamic::Bytes(b) => {
                f.write_str("b'")?;
                for &byte in b {
                    match byte {
                        b'\'' => f.write_str("\\'")?,
                        b'\\' => f.write_str("\\\\")?,
                        0x20..=0x7e => write!(f, "{}", byte as char)?,
                        _ => write!(f, "\\x{byte:02x}")?,
                    }
                }
                f.write_str("'")
            }
            Dynamic::Some(v) => write!(f, "{v}"),
            Dynamic::Seq(items) => write_list(f, items, "[", "]"),
            Dynamic::Map(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Dynamic::Struct { name, fields } => {
                write!(f, "{name}(")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str(")")
            }
            Dynamic::Variant {
                name,
                variant,
                value,
            } => match &**value {
                Dynamic::Unit => write!(f, "{name}::{variant}"),
                Dynamic::Seq(items) => {
                    write!(f, "{name}::{variant}")?;
                    write_list(f, items, "(", ")")
                }
                Dynamic::Struct { fields, .. } => {
                    let inner = Dynamic::Struct {
                        name: format!("{name}::{variant}"),
                        fields: fields.clone(),
                    };
                    write!(f, "{inner}")
                }
                v => write!(f, "{name}::{variant}({v})"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// T -> Dynamic

struct ToDynamic;

/// Collects the parts of a sequence, tuple, map or struct.
struct Parts {
    kind: PartsKind,
    items: Vec<Dynamic>,
    fields: Vec<(String, Dynamic)>,
    pairs: Vec<(Dynamic, Dynamic)>,
    key: Option<Dynamic>,
}

enum PartsKind {
    Seq,
    Tuple,
    Map,
    Struct(&'static str),
    TupleVariant(&'static str, &'static str),
    StructVariant(&'static str, &'static str),
}

impl Parts {
    fn new(kind: PartsKind, len: Option<usize>) -> Parts {
        let cap = len.unwrap_or(0).min(4096);
        Parts {
            kind,
            items: Vec::with_capacity(cap),
            fields: Vec::new(),
            pairs: Vec::new(),
            key: None,
        }
    }

    fn finish(self) -> Dynamic {
        match self.kind {
            PartsKind::Seq | PartsKind::Tuple => Dynamic::Seq(self.items),
            PartsKind::Map => Dynamic::Map(self.pairs),
            PartsKind::Struct(name) => Dynamic::Struct {
                name: name.into(),
                fields: self.fields,
            },
            PartsKind::TupleVariant(name, variant) => Dynamic::Variant {
                name: name.into(),
                variant: variant.into(),
                value: Box::new(Dynamic::Seq(self.items)),
            },
            PartsKind::StructVariant(name, variant) => Dynamic::Variant {
                name: name.into(),
                variant: variant.into(),
                value: Box::new(Dynamic::Struct {
                    name: variant.into(),
                    fields: self.fields,
                }),
            },
        }
    }
}

impl ser::Serializer for ToDynamic {
    type Ok = Dynamic;
    type Error = DynamicError;
    type SerializeSeq = Parts;
    type SerializeTuple = Parts;
    type SerializeTupleStruct = Parts;
    type SerializeTupleVariant = Parts;
    type SerializeMap = Parts;
    type SerializeStruct = Parts;
    type SerializeStructVariant = Parts;

    fn serialize_bool(self, v: bool) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Dynamic, DynamicError> {
        i64::try_from(v)
            .map(Dynamic::Int)
            .map_err(|_| DynamicError(format!("{v} does not fit in 64 bits")))
    }
    fn serialize_u8(self, v: u8) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::UInt(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::UInt(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::UInt(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::UInt(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Dynamic, DynamicError> {
        u64::try_from(v)
            .map(Dynamic::UInt)
            .map_err(|_| DynamicError(format!("{v} does not fit in 64 bits")))
    }
    fn serialize_f32(self, v: f32) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Char(v))
    }
    fn serialize_str(self, v: &str) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Str(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Bytes(v.into()))
    }
    fn serialize_none(self) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Some(Box::new(v.serialize(ToDynamic)?)))
    }
    fn serialize_unit(self) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Unit)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Struct {
            name: name.into(),
            fields: Vec::new(),
        })
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Variant {
            name: name.into(),
            variant: variant.into(),
            value: Box::new(Dynamic::Unit),
        })
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Dynamic, DynamicError> {
        v.serialize(ToDynamic)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Dynamic, DynamicError> {
        Ok(Dynamic::Variant {
            name: name.into(),
            variant: variant.into(),
            value: Box::new(v.serialize(ToDynamic)?),
        })
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::Seq, len))
    }
    fn serialize_tuple(self, len: usize) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::Tuple, Some(len)))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::Tuple, Some(len)))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Parts, DynamicError> {
        Ok(Parts::new(
            PartsKind::TupleVariant(name, variant),
            Some(len),
        ))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::Map, None))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::Struct(name), None))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Parts, DynamicError> {
        Ok(Parts::new(PartsKind::StructVariant(name, variant), None))
    }
}

impl ser::SerializeSeq for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), DynamicError> {
        self.items.push(v.serialize(ToDynamic)?);
        Ok(())
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), DynamicError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), DynamicError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), DynamicError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), DynamicError> {
        self.key = Some(k.serialize(ToDynamic)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), DynamicError> {
        let k = self
            .key
            .take()
            .ok_or_else(|| DynamicError("a map value without its key".into()))?;
        self.pairs.push((k, v.serialize(ToDynamic)?));
        Ok(())
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), DynamicError> {
        self.fields.push((name.into(), v.serialize(ToDynamic)?));
        Ok(())
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for Parts {
    type Ok = Dynamic;
    type Error = DynamicError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), DynamicError> {
        ser::SerializeStruct::serialize_field(self, name, v)
    }
    fn end(self) -> Result<Dynamic, DynamicError> {
        Ok(self.finish())
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic -> T

impl<'de> IntoDeserializer<'de, DynamicError> for Dynamic {
    type Deserializer = Dynamic;
    fn into_deserializer(self) -> Dynamic {
        self
    }
}

impl<'de> Deserializer<'de> for Dynamic {
    type Error = DynamicError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DynamicError> {
        match self {
            Dynamic::Unit => v.visit_unit(),
            Dynamic::Bool(b) => v.visit_bool(b),
            Dynamic::Int(i) => v.visit_i64(i),
            Dynamic::UInt(u) => v.visit_u64(u),
            Dynamic::Float(x) => v.visit_f64(x),
            Dynamic::Char(c) => v.visit_char(c),
            Dynamic::Str(s) => v.visit_string(s),
            Dynamic::Bytes(b) => v.visit_byte_buf(b),
            Dynamic::None => v.visit_none(),
            Dynamic::Some(x) => v.visit_some(*x),
            Dynamic::Seq(items) => v.visit_seq(de::value::SeqDeserializer::new(items.into_iter())),
            Dynamic::Map(pairs) => v.visit_map(de::value::MapDeserializer::new(pairs.into_iter())),
            Dynamic::Struct { fields, .. } => v.visit_map(de::value::MapDeserializer::new(
                fields.into_iter().map(|(k, x)| (Dynamic::Str(k), x)),
            )),
            Dynamic::Variant { variant, value, .. } => v.visit_enum(VariantAccess {
                variant,
                value: *value,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DynamicError> {
        match self {
            Dynamic::None | Dynamic::Unit => v.visit_none(),
            Dynamic::Some(x) => v.visit_some(*x),
            other => v.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DynamicError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DynamicError> {
        match self {
            Dynamic::Variant { variant, value, .. } => v.visit_enum(VariantAccess {
                variant,
                value: *value,
            }),
            Dynamic::Str(variant) => v.visit_enum(VariantAccess {
                variant,
                value: Dynamic::Unit,
            }),
            other => Err(DynamicError(format!(
                "expected an enum variant, found {}",
                other.kind()
            ))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DynamicError> {
        match self {
            Dynamic::Unit => v.visit_unit(),
            Dynamic::Struct { fields, .. } if fields.is_empty() => v.visit_unit(),
            other => other.deserialize_any(v),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DynamicError> {
        self.deserialize_any(v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit seq tuple map struct identifier ignored_any
    }
}

/// An enum variant being read.
struct VariantAccess {
    variant: String,
    value: Dynamic,
}

impl<'de> de::EnumAccess<'de> for VariantAccess {
    type Error = DynamicError;
    type Variant = Dynamic;
    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Dynamic), DynamicError> {
        let name = seed.deserialize(Dynamic::Str(self.variant))?;
        Ok((name, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for Dynamic {
    type Error = DynamicError;
    fn unit_variant(self) -> Result<(), DynamicError> {
        match self {
            Dynamic::Unit => Ok(()),
            other => Err(DynamicError(format!(
                "expected a unit variant, found {}",
                other.kind()
            ))),
        }
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, DynamicError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DynamicError> {
        self.deserialize_any(v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DynamicError> {
        self.deserialize_any(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect { w: u8, h: u8 },
        Pair(i8, i8),
    }

    fn round<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(v: T) -> String {
        let d = Dynamic::from_value(&v).unwrap();
        // Through postcard, as the server stores it.
        let bytes = postcard::to_stdvec(&d).unwrap();
        let d: Dynamic = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(d.to_value::<T>().unwrap(), v);
        d.to_string()
    }

    #[test]
    fn values_round_trip_and_print_like_python() {
        assert_eq!(round(1i32), "1");
        assert_eq!(round(-7i64), "-7");
        assert_eq!(round(2.5f64), "2.5");
        assert_eq!(round(2.0f64), "2.0");
        assert_eq!(round(true), "True");
        assert_eq!(round(String::from("it's")), "'it\\'s'");
        assert_eq!(round(Some(3u8)), "3");
        assert_eq!(round(None::<u8>), "None");
        assert_eq!(round(vec![1u8, 2]), "[1, 2]");
        assert_eq!(round(Point { x: 1, y: -2 }), "Point(x=1, y=-2)");
        assert_eq!(round(Shape::Empty), "Shape::Empty");
        assert_eq!(round(Shape::Circle(1.5)), "Shape::Circle(1.5)");
        assert_eq!(round(Shape::Rect { w: 2, h: 3 }), "Shape::Rect(w=2, h=3)");
        assert_eq!(round(Shape::Pair(1, -1)), "Shape::Pair(1, -1)");
        assert_eq!(round(('a', ())), "['a', None]");
        let m: std::collections::BTreeMap<String, u8> = [("k".into(), 1)].into();
        assert_eq!(round(m), "{'k': 1}");
        assert_eq!(
            round(serde_bytes::ByteBuf::from(b"a\x00'".to_vec())),
            "b'a\\x00\\''"
        );
    }

    #[test]
    fn a_wrong_type_is_an_error_that_says_what() {
        let d = Dynamic::from_value("text").unwrap();
        let e = d.to_value::<i64>().unwrap_err();
        assert!(e.to_string().contains("string"), "{e}");
        let d = Dynamic::from_value(&Point { x: 1, y: 2 }).unwrap();
        assert!(d.to_value::<Shape>().is_err());
        assert!(d.to_value::<(i32, i32)>().is_err());
        let d = Dynamic::from_value(&-1i32).unwrap();
        assert!(d.to_value::<u32>().is_err(), "a negative number is no u32");
        assert_eq!(d.to_value::<f64>().unwrap(), -1.0);
    }
}
