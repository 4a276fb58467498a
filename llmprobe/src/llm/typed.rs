//! Lenient typed JSON views through which the dialects read stream events and response bodies:
//! the data deserialized straight into small structs that borrow its strings, instead of a
//! `serde_json::Value` tree (no map per object, no allocation per unescaped string). The views
//! the dialects share live here too: [`UsageView`] (every provider's `usage` counts),
//! [`ErrorView`] with [`error_named_by`], and [`ContentText`] (a string or an array of text
//! parts).
//!
//! Exactly as lenient and exactly as strict as `Value`, so that a dialect reads the same things
//! either way and a bad event is bad either way:
//! * everything is read through `deserialize_any`, so the parser accepts exactly what it accepts
//!   for a `Value` (numbers in range, nesting depth, escapes); skipped parts go through [`Skip`],
//!   which visits them the same way, not through `IgnoredAny`;
//! * a field of the wrong type is read as "present, but not that type" (as `Value::get` followed
//!   by `as_str`/`as_u64`/`as_array` gives None), never as an error;
//! * a repeated key keeps its last value, as `Value`'s map does;
//! * presence is kept apart from type (`delta: null` is present), as `Value::get` does.
//!
//! Objects are declared with `json_object!`; scalars are [`Scalar`]; arrays are [`List`].
//! Objects and arrays are filled in place ([`Field`]): a nested view is written into its slot in
//! the view above it, not returned through every layer of the parser; parts a stream event
//! rarely carries (`usage`, `error`, whole-response messages) are boxed, so the views stay small.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A field of a view, read straight into its slot in the view (`Option<Self>`, Some after a
/// successful read). The views nest (a chunk holds a list of choices, a choice a delta), and
/// returning each level by value moved it through every layer of the parser; objects and lists
/// are filled in place instead, and only scalars and boxed parts are returned by value.
pub trait Field<'de>: Sized {
    /// Reads one JSON value into `slot`.
    fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error>;
}

/// The seed that reads a [`Field`] into its slot.
pub struct Slot<'s, T>(pub &'s mut Option<T>);

impl<'de, T: Field<'de>> serde::de::DeserializeSeed<'de> for Slot<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        T::read(d, self.0)
    }
}

/// The `visit_bool`/`visit_i64`/`visit_u64`/`visit_f64` methods of a lenient visitor, for the
/// scalars it reads as `$v`: returned (`ret Type => v`), or stored in the visitor's slot
/// (`slot => v`, the visitor being a tuple struct over `&mut Option<_>`).
macro_rules! scalars_as {
    (ret $ret:ty => $v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$ret, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$ret, E> {
            Ok($v)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$ret, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$ret, E> {
            Ok($v)
        }
    };
    (slot => $v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            *self.0 = Some($v);
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            *self.0 = Some($v);
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            *self.0 = Some($v);
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            *self.0 = Some($v);
            Ok(())
        }
    };
}
pub(crate) use scalars_as;

/// [`Field`] for types read by value (scalars, `Value`, boxed parts).
macro_rules! by_value {
    ($($ty:ty),*) => {$(
        impl<'de> Field<'de> for $ty {
            fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error> {
                *slot = Some(Deserialize::deserialize(d)?);
                Ok(())
            }
        }
    )*};
}

by_value!(Skip, Scalar<'de>, ContentText<'de>, serde_json::Value);

impl<'de, T: Deserialize<'de>> Field<'de> for Box<T> {
    fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error> {
        *slot = Some(Deserialize::deserialize(d)?);
        Ok(())
    }
}

/// Any JSON value, visited and dropped.
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_as!(ret Skip => Skip);
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                drain_seq(seq)?;
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                drain_map(map)?;
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

/// Visits the rest of an array.
pub fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// Visits the rest of an object.
pub fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// An object key, borrowed unless it had escapes.
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value read for its scalar: a string (borrowed unless it had escapes), an unsigned
/// integer, a boolean, null, or anything else.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `u64` (what `Value::as_u64` gives).
    U64(u64),
    /// A string.
    Str(Cow<'a, str>),
    /// A negative or fractional number, an array or an object.
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::U64(n))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
                drain_seq(seq)?;
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
                drain_map(map)?;
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// `Value::as_str` of an optional field.
pub fn as_str<'s>(v: &'s Option<Scalar<'_>>) -> Option<&'s str> {
    match v {
        Some(Scalar::Str(s)) => Some(s),
        _ => None,
    }
}

/// A non-empty string field (`json::nonempty_str`).
pub fn nonempty<'s>(v: &'s Option<Scalar<'_>>) -> Option<&'s str> {
    as_str(v).filter(|s| !s.is_empty())
}

/// `Value::as_u64` of an optional field.
pub fn as_u64(v: &Option<Scalar<'_>>) -> Option<u64> {
    match v {
        Some(Scalar::U64(n)) => Some(*n),
        _ => None,
    }
}

/// `Value::as_bool` of an optional field.
pub fn as_bool(v: &Option<Scalar<'_>>) -> Option<bool> {
    match v {
        Some(Scalar::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// A field that is present and not null.
pub fn is_set(v: &Option<Scalar<'_>>) -> bool {
    !matches!(v, None | Some(Scalar::Null))
}

/// A JSON value read for its array of `T`: the elements when it is an array, else nothing.
/// An array of one element (most arrays of a stream event: `choices`, `candidates`, `parts`)
/// is held inline, without an allocation.
#[derive(Debug)]
pub struct List<T>(Option<Items<T>>);

/// The elements of an array.
#[derive(Debug)]
enum Items<T> {
    None,
    One(T),
    Many(Vec<T>),
}

impl<T> List<T> {
    /// The elements (none when the value is not an array).
    pub fn items(&self) -> &[T] {
        match &self.0 {
            None | Some(Items::None) => &[],
            Some(Items::One(x)) => std::slice::from_ref(x),
            Some(Items::Many(v)) => v,
        }
    }
}

/// The elements of an optional array field (`Value::get` + `as_array`, flattened).
pub fn items<T>(v: &Option<List<T>>) -> &[T] {
    v.as_ref().map_or(&[], List::items)
}

/// An optional field that is an array (`Value::as_array().is_some()`).
pub fn is_array<T>(v: &Option<List<T>>) -> bool {
    matches!(v, Some(List(Some(_))))
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_as!(ret List<T> => List(None));
            fn visit_str<E>(self, _: &str) -> Result<List<T>, E> {
                Ok(List(None))
            }
            fn visit_unit<E>(self) -> Result<List<T>, E> {
                Ok(List(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let Some(first) = seq.next_element::<T>()? else {
                    return Ok(List(Some(Items::None)));
                };
                let Some(second) = seq.next_element::<T>()? else {
                    return Ok(List(Some(Items::One(first))));
                };
                let mut out = vec![first, second];
                while let Some(x) = seq.next_element::<T>()? {
                    out.push(x);
                }
                Ok(List(Some(Items::Many(out))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T>, A::Error> {
                drain_map(map)?;
                Ok(List(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de, T: Field<'de>> Field<'de> for List<T> {
    fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error> {
        struct V<'s, T>(&'s mut Option<List<T>>);
        impl<'de, T: Field<'de>> Visitor<'de> for V<'_, T> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_as!(slot => List(None));
            fn visit_str<E>(self, _: &str) -> Result<(), E> {
                *self.0 = Some(List(None));
                Ok(())
            }
            fn visit_unit<E>(self) -> Result<(), E> {
                *self.0 = Some(List(None));
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let mut first = None;
                let items = if seq.next_element_seed(Slot(&mut first))?.is_none() {
                    Items::None
                } else {
                    let mut second = None;
                    if seq.next_element_seed(Slot(&mut second))?.is_none() {
                        first.map_or(Items::None, Items::One)
                    } else {
                        let mut out: Vec<T> = first.into_iter().chain(second).collect();
                        loop {
                            let mut next = None;
                            if seq.next_element_seed(Slot(&mut next))?.is_none() {
                                break;
                            }
                            out.extend(next);
                        }
                        Items::Many(out)
                    }
                };
                *self.0 = Some(List(Some(items)));
                Ok(())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
                drain_map(map)?;
                *self.0 = Some(List(None));
                Ok(())
            }
        }
        d.deserialize_any(V(slot))
    }
}

/// Declares a lenient view of a JSON object: `"key" => field: Type` for each key read (each
/// field an `Option<Type>`: absent or present), every other key visited by [`Skip`]. A value
/// that is not an object reads as the default (all absent) with `is_object` false (and `is_null`
/// true for `null`).
macro_rules! json_object {
    ($(#[$meta:meta])* $vis:vis struct $name:ident<$lt:lifetime> {
        $($key:literal => $field:ident : $ty:ty,)*
    }) => {
        $(#[$meta])*
        #[derive(Default)]
        #[allow(dead_code)]
        $vis struct $name<$lt> {
            /// The value was an object.
            pub is_object: bool,
            /// The value was `null`.
            pub is_null: bool,
            $(pub $field: Option<$ty>,)*
            _borrows: std::marker::PhantomData<&$lt ()>,
        }

        impl<'de> $crate::llm::typed::Field<'de> for $name<'de> {
            fn read<D: serde::Deserializer<'de>>(
                d: D,
                slot: &mut Option<Self>,
            ) -> Result<(), D::Error> {
                struct V<'s, 'de>(&'s mut Option<$name<'de>>);
                impl<'de> serde::de::Visitor<'de> for V<'_, 'de> {
                    type Value = ();
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("any JSON value")
                    }
                    $crate::llm::typed::scalars_as!(slot => Default::default());
                    fn visit_str<E>(self, _: &str) -> Result<(), E> {
                        *self.0 = Some(Default::default());
                        Ok(())
                    }
                    fn visit_unit<E>(self) -> Result<(), E> {
                        *self.0 = Some($name {
                            is_null: true,
                            ..Default::default()
                        });
                        Ok(())
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        seq: A,
                    ) -> Result<(), A::Error> {
                        $crate::llm::typed::drain_seq(seq)?;
                        *self.0 = Some(Default::default());
                        Ok(())
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<(), A::Error> {
                        // Filled in place; a repeated key starts its field afresh.
                        let out = self.0.insert($name {
                            is_object: true,
                            ..Default::default()
                        });
                        while let Some(key) = map.next_key::<$crate::llm::typed::Key<'de>>()? {
                            match &*key.0 {
                                $($key => map.next_value_seed(
                                    $crate::llm::typed::Slot(&mut out.$field),
                                )?,)*
                                _ => {
                                    map.next_value::<$crate::llm::typed::Skip>()?;
                                }
                            }
                        }
                        Ok(())
                    }
                }
                d.deserialize_any(V(slot))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let mut slot = None;
                <Self as $crate::llm::typed::Field<'de>>::read(d, &mut slot)?;
                Ok(slot.unwrap_or_default())
            }
        }
    };
}
pub(crate) use json_object;

json_object! {
    /// An `error` member, as the providers spell it: OpenAI `type`/`code`, Anthropic `type`,
    /// Gemini `status`.
    pub struct ErrorView<'a> {
        "type" => ty: Scalar<'a>,
        "code" => code: Scalar<'a>,
        "status" => status: Scalar<'a>,
    }
}

json_object! {
    /// A `usage` object, as the providers spell its counts: one view for every dialect, each of
    /// which reads (and adds up) its own fields. OpenAI chat: `prompt_tokens`,
    /// `completion_tokens`, the two `*_details`, DeepSeek's `prompt_cache_hit_tokens`; Responses
    /// API, DashScope and Anthropic: `input_tokens`, `output_tokens`, their `*_details`,
    /// Anthropic's cache counts; Gemini's `usageMetadata`: `promptTokenCount` and friends.
    pub struct UsageView<'a> {
        "prompt_tokens" => prompt_tokens: Scalar<'a>,
        "completion_tokens" => completion_tokens: Scalar<'a>,
        "completion_tokens_details" => completion_details: Details<'a>,
        "prompt_tokens_details" => prompt_details: Details<'a>,
        "prompt_cache_hit_tokens" => prompt_cache_hit_tokens: Scalar<'a>,
        "input_tokens" => input_tokens: Scalar<'a>,
        "output_tokens" => output_tokens: Scalar<'a>,
        "output_tokens_details" => output_details: Details<'a>,
        "input_tokens_details" => input_details: Details<'a>,
        "cache_read_input_tokens" => cache_read: Scalar<'a>,
        "cache_creation_input_tokens" => cache_creation: Scalar<'a>,
        "promptTokenCount" => prompt: Scalar<'a>,
        "candidatesTokenCount" => candidates: Scalar<'a>,
        "thoughtsTokenCount" => thoughts: Scalar<'a>,
        "cachedContentTokenCount" => cached: Scalar<'a>,
    }
}

json_object! {
    /// The `*_tokens_details` of a `usage` object.
    pub struct Details<'a> {
        "reasoning_tokens" => reasoning_tokens: Scalar<'a>,
        "cached_tokens" => cached_tokens: Scalar<'a>,
    }
}

json_object! {
    /// One of a message's `tool_calls` (OpenAI chat, DashScope): its place in a streamed
    /// message (`index`), the API's call id, and its function.
    pub struct ToolCall<'a> {
        "index" => index: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "function" => function: ToolFunction<'a>,
    }
}

json_object! {
    /// A tool call's `function` (or OpenAI's legacy `function_call`): the tool's name and its
    /// `arguments`, a JSON string.
    pub struct ToolFunction<'a> {
        "name" => name: Scalar<'a>,
        "arguments" => arguments: Scalar<'a>,
    }
}

json_object! {
    /// One part of a multimodal message `content`.
    pub struct TextPart<'a> {
        "text" => text: Scalar<'a>,
    }
}

/// A message `content` read as its text: a string, or the `text` strings of an array's parts,
/// joined; anything else is no text.
#[derive(Debug, Default)]
pub struct ContentText<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for ContentText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ContentText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_as!(ret Self::Value => ContentText::default());
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ContentText::default())
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(ContentText(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ContentText(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(ContentText(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut text = String::new();
                while let Some(part) = seq.next_element::<TextPart<'de>>()? {
                    if let Some(t) = as_str(&part.text) {
                        text.push_str(t);
                    }
                }
                Ok(ContentText(Cow::Owned(text)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map)?;
                Ok(ContentText::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The error named by an `error` member that is present and not null: the non-empty string
/// `field` picks from it, else `error`. None when there is no such member.
pub fn error_named_by<'a>(
    error: &Option<Box<ErrorView<'a>>>,
    field: impl for<'s> Fn(&'s ErrorView<'a>) -> &'s Option<Scalar<'a>>,
) -> Option<String> {
    let e = error.as_deref().filter(|e| !e.is_null)?;
    Some(nonempty(field(e)).unwrap_or("error").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    json_object! {
        struct Probe<'a> {
            "s" => s: Scalar<'a>,
            "n" => n: Scalar<'a>,
            "list" => list: List<Scalar<'a>>,
            "obj" => obj: Probe2<'a>,
        }
    }

    json_object! {
        struct Probe3<'a> {
            "error" => error: Box<ErrorView<'a>>,
        }
    }

    json_object! {
        struct Probe2<'a> {
            "x" => x: Scalar<'a>,
        }
    }

    #[test]
    fn lenient_like_value_and_strict_like_value() {
        let p: Probe<'_> =
            serde_json::from_str(r#"{"s":"a","n":3,"list":[1,"b"],"obj":{"x":true},"z":[{}]}"#)
                .expect("parses");
        assert!(p.is_object);
        assert_eq!(as_str(&p.s), Some("a"));
        assert_eq!(as_u64(&p.n), Some(3));
        assert_eq!(items(&p.list).len(), 2);
        assert_eq!(p.obj.as_ref().map(|o| as_bool(&o.x)), Some(Some(true)));
        // Wrong types: present, not that type; a repeated key keeps its last value.
        let p: Probe<'_> =
            serde_json::from_str(r#"{"s":1,"n":-1,"list":{"a":1},"obj":null,"s":"last"}"#)
                .expect("parses");
        assert_eq!(as_str(&p.s), Some("last"));
        assert_eq!(as_u64(&p.n), None);
        assert!(!is_array(&p.list) && p.list.is_some());
        assert!(p.obj.as_ref().is_some_and(|o| !o.is_object));
        // Objects and lists are filled in place: a repeated key starts its field afresh.
        let p: Probe<'_> =
            serde_json::from_str(r#"{"obj":{"x":true},"list":[1,2,3],"obj":{},"list":[4]}"#)
                .expect("parses");
        assert_eq!(p.obj.as_ref().map(|o| o.x.is_none()), Some(true));
        assert_eq!(items(&p.list), &[Scalar::U64(4)]);
        let p: Probe<'_> = serde_json::from_str(r#"{"obj":{"x":1},"obj":null}"#).expect("parses");
        assert!(p.obj.as_ref().is_some_and(|o| o.is_null && o.x.is_none()));
        let p: Probe<'_> = serde_json::from_str("[1,2]").expect("parses");
        assert!(!p.is_object);
        // Escaped strings are read (owned); escaped keys match.
        let p: Probe<'_> = serde_json::from_str(r#"{"\u0073":"a\nb"}"#).expect("parses");
        assert_eq!(as_str(&p.s), Some("a\nb"));
        // Exactly what `Value` rejects is rejected, skipped parts included.
        for bad in [
            r#"{"z":1e400}"#,
            r#"{"s":"x"} tail"#,
            r#"{"z":"\ud800"}"#,
            "{\"z\":\"\u{1}\"}",
            r#"{"s":"#,
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
            assert!(serde_json::from_str::<Probe<'_>>(bad).is_err(), "{bad}");
        }
        // The shared error reader: absent or null is no error; a name, else `error`.
        let err = |s: &str| {
            let o: Probe3<'_> = serde_json::from_str(s).expect("parses");
            error_named_by(&o.error, |e| &e.ty)
        };
        assert_eq!(err("{}"), None);
        assert_eq!(err(r#"{"error":null}"#), None);
        assert_eq!(err(r#"{"error":"x"}"#).as_deref(), Some("error"));
        assert_eq!(err(r#"{"error":{"type":""}}"#).as_deref(), Some("error"));
        assert_eq!(
            err(r#"{"error":{"type":"overloaded"}}"#).as_deref(),
            Some("overloaded")
        );
        let deep = format!("{{\"z\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        assert!(serde_json::from_str::<Probe<'_>>(&deep).is_err());
    }
}
