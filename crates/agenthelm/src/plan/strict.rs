//! What YAML parsing passes over in silence, refused: tags (`!!python/object:os.system`), numbers
//! out of range (`1e400`, which would become the text "1e400"), `.nan` and `.inf` (which would
//! become `null`), and keys given twice in one mapping (the last would win).
//!
//! The check walks the events of libyaml, the parser `yaml_serde` itself uses, so both read the
//! same document; parse errors are left to the deserializer, which reports them.

use std::collections::HashSet;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

use super::PlanError;

/// Refuses YAML (or JSON) `text` that holds a tag, a number out of range, `.nan`/`.inf`, or a
/// key given twice in one mapping, naming the line, column and field, as
/// [`PlanError::Parse`] does for other mistakes. Text that does not parse passes: the
/// deserializer reports that.
pub fn check_yaml(text: &str) -> Result<(), PlanError> {
    match first_surprise(text) {
        None => Ok(()),
        Some(found) => Err(PlanError::Parse {
            format: "YAML",
            line: Some(found.line),
            column: Some(found.column),
            path: Some(found.path).filter(|p| !p.is_empty()),
            message: found.message,
        }),
    }
}

/// A problem and where it is (1-based line and column, field path).
struct Found {
    line: usize,
    column: usize,
    path: String,
    message: String,
}

/// One event, reduced to what the check needs.
enum Event {
    Scalar {
        tag: Option<String>,
        value: String,
        plain: bool,
    },
    SequenceStart(Option<String>),
    MappingStart(Option<String>),
    End,
    Alias,
    Other,
}

/// Where the walk is inside a mapping or a sequence.
enum Frame {
    Mapping {
        keys: HashSet<String>,
        key: Option<String>,
        /// The next node is a key (not a value).
        at_key: bool,
    },
    Sequence {
        index: usize,
    },
}

fn first_surprise(text: &str) -> Option<Found> {
    let mut events = Events::new(text)?;
    let mut frames: Vec<Frame> = Vec::new();
    while let Some((event, line, column)) = events.next() {
        let found = |path: String, message: String| {
            Some(Found {
                line: line + 1,
                column: column + 1,
                path,
                message,
            })
        };
        match event {
            Event::End => {
                frames.pop();
                node_done(&mut frames);
            }
            Event::Other => {}
            event => {
                if let Some(message) = surprise_in(&event) {
                    return found(path(&frames), message);
                }
                if let Some(Frame::Mapping {
                    keys,
                    key,
                    at_key: true,
                }) = frames.last_mut()
                {
                    let name = match &event {
                        Event::Scalar { value, .. } => value.clone(),
                        _ => "?".to_owned(),
                    };
                    if matches!(event, Event::Scalar { .. }) && !keys.insert(name.clone()) {
                        let mut at = path(&frames);
                        at.push_str(&field(&at, &name));
                        return found(at, format!("duplicate key `{name}`"));
                    }
                    *key = Some(name);
                }
                match event {
                    Event::MappingStart(_) => frames.push(Frame::Mapping {
                        keys: HashSet::new(),
                        key: None,
                        at_key: true,
                    }),
                    Event::SequenceStart(_) => frames.push(Frame::Sequence { index: 0 }),
                    _ => node_done(&mut frames),
                }
            }
        }
    }
    None
}

/// A node ended: a mapping now expects the other of key and value, a sequence its next item.
fn node_done(frames: &mut [Frame]) {
    match frames.last_mut() {
        Some(Frame::Mapping { at_key, .. }) => *at_key = !*at_key,
        Some(Frame::Sequence { index }) => *index += 1,
        None => {}
    }
}

/// The field being read, like `steps[0].args.n`.
fn path(frames: &[Frame]) -> String {
    let mut out = String::new();
    for frame in frames {
        match frame {
            Frame::Mapping {
                key: Some(key),
                at_key: false,
                ..
            } => out.push_str(&field(&out, key)),
            Frame::Sequence { index } => out.push_str(&format!("[{index}]")),
            Frame::Mapping { .. } => {}
        }
    }
    out
}

fn field(before: &str, key: &str) -> String {
    if before.is_empty() {
        key.to_owned()
    } else {
        format!(".{key}")
    }
}

/// The tags of plain data, which say no more than the value itself.
const CORE_TAGS: [&str; 7] = ["str", "int", "float", "bool", "null", "seq", "map"];
const CORE_PREFIX: &str = "tag:yaml.org,2002:";

/// What is wrong with this node itself, if anything.
fn surprise_in(event: &Event) -> Option<String> {
    let tag = match event {
        Event::Scalar { tag, .. } | Event::SequenceStart(tag) | Event::MappingStart(tag) => {
            tag.as_deref()
        }
        _ => None,
    };
    if let Some(tag) = tag {
        let core = tag
            .strip_prefix(CORE_PREFIX)
            .is_some_and(|name| CORE_TAGS.contains(&name));
        if !core {
            let shown = match tag.strip_prefix(CORE_PREFIX) {
                Some(name) => format!("!!{name}"),
                None => tag.to_owned(),
            };
            return Some(format!(
                "YAML tag `{shown}` is not allowed: the file holds plain data"
            ));
        }
    }
    let Event::Scalar { value, plain, tag } = event else {
        return None;
    };
    let as_number = *plain || tag.as_deref() == Some("tag:yaml.org,2002:float");
    if !as_number {
        return None;
    }
    let unsigned = value.trim_start_matches(['+', '-']);
    if matches!(
        unsigned,
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF"
    ) {
        return Some(format!(
            "`{value}` is not a number JSON can hold (no NaN or infinity)"
        ));
    }
    let numeric = value.bytes().any(|b| b.is_ascii_digit());
    if numeric && value.parse::<f64>().is_ok_and(f64::is_infinite) {
        return Some(format!("number `{value}` is out of range"));
    }
    None
}

/// libyaml's events over a text. Every `unsafe` block of the check is here.
struct Events<'a> {
    parser: Box<MaybeUninit<sys::yaml_parser_t>>,
    /// The parser reads from this text, so it must live as long as the parser.
    _text: &'a str,
    done: bool,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Option<Events<'a>> {
        let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` initializes the parser in place (boxed, so it does not
        // move); the input is borrowed for `'a`, as long as `Events` holds the parser.
        unsafe {
            if sys::yaml_parser_initialize(parser.as_mut_ptr()).fail {
                return None;
            }
            sys::yaml_parser_set_encoding(parser.as_mut_ptr(), sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(parser.as_mut_ptr(), text.as_ptr(), text.len() as _);
        }
        Some(Events {
            parser,
            _text: text,
            done: false,
        })
    }

    /// The next event with its 0-based line and column; `None` at the end or at a parse error.
    fn next(&mut self) -> Option<(Event, usize, usize)> {
        if self.done {
            return None;
        }
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new`; a successful `yaml_parser_parse` fills the
        // event, which is read (copying what is kept) and then freed once.
        unsafe {
            if sys::yaml_parser_parse(self.parser.as_mut_ptr(), raw.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let raw = raw.as_mut_ptr();
            let mark = (*raw).start_mark;
            let event = convert(&*raw);
            if matches!((*raw).type_, sys::YAML_STREAM_END_EVENT) {
                self.done = true;
            }
            sys::yaml_event_delete(raw);
            Some((event, mark.line as usize, mark.column as usize))
        }
    }
}

/// # Safety
/// `raw` must be an event filled by `yaml_parser_parse` and not yet deleted.
unsafe fn convert(raw: &sys::yaml_event_t) -> Event {
    // SAFETY: the union field read is the one `type_` says is filled; its pointers are valid
    // C strings (or null) and a value of `length` bytes, owned by the event.
    unsafe {
        match raw.type_ {
            sys::YAML_SCALAR_EVENT => {
                let scalar = raw.data.scalar;
                let bytes = std::slice::from_raw_parts(scalar.value, scalar.length as usize);
                Event::Scalar {
                    tag: tag_of(scalar.tag),
                    value: String::from_utf8_lossy(bytes).into_owned(),
                    plain: matches!(scalar.style, sys::YAML_PLAIN_SCALAR_STYLE),
                }
            }
            sys::YAML_SEQUENCE_START_EVENT => {
                Event::SequenceStart(tag_of(raw.data.sequence_start.tag))
            }
            sys::YAML_MAPPING_START_EVENT => {
                Event::MappingStart(tag_of(raw.data.mapping_start.tag))
            }
            sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
            sys::YAML_ALIAS_EVENT => Event::Alias,
            _ => Event::Other,
        }
    }
}

/// # Safety
/// `tag` must be null or a NUL-terminated string.
unsafe fn tag_of(tag: *const u8) -> Option<String> {
    if tag.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    let text = unsafe { CStr::from_ptr(tag.cast()) };
    Some(text.to_string_lossy().into_owned())
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was initialized in `new` (an `Events` exists only then).
        unsafe { sys::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> String {
        check_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn silent_changes_are_errors_naming_line_and_field() {
        let steps = "goal: g\nsteps:\n  - id: a\n    args:\n";
        assert_eq!(
            problem(&format!("{steps}      n: 1e400\n")),
            "YAML plan at line 5, column 10, field `steps[0].args.n`: number `1e400` is out of range"
        );
        assert!(problem(&format!("{steps}      n: .nan\n"))
            .contains("line 5, column 10, field `steps[0].args.n`: `.nan` is not a number"));
        assert!(problem(&format!("{steps}      n: [1, -.inf]\n"))
            .contains("field `steps[0].args.n[1]`: `-.inf`"));
        assert_eq!(
            problem(&format!("{steps}      n: 1\n      n: 2\n")),
            "YAML plan at line 6, column 7, field `steps[0].args.n`: duplicate key `n`"
        );
        assert!(
            problem(r#"{"goal": "g", "steps": [{"id": "a", "args": {"n": 1, "n": 2}}]}"#)
                .contains("field `steps[0].args.n`: duplicate key `n`")
        );
        assert_eq!(
            problem("goal: g\nsteps:\n  - id: a\n    tool: !!python/object:os.system ls\n"),
            "YAML plan at line 4, column 11, field `steps[0].tool`: YAML tag `!!python/object:os.system` is not allowed: the file holds plain data"
        );
        assert!(problem("goal: !local x\n").contains("YAML tag `!local`"));
    }

    #[test]
    fn json_plans_are_checked_too() {
        let text =
            "{\"goal\": \"g\", \"steps\": [{\"id\": \"a\", \"args\": {\"n\": 1, \"n\": 2}}]}";
        let error = crate::Plan::from_json(text).unwrap_err().to_string();
        assert_eq!(
            error,
            "JSON plan at line 1, column 54, field `steps[0].args.n`: duplicate key `n`"
        );
    }

    #[test]
    fn plain_data_passes() {
        let text = "goal: g\nsteps:\n  - id: a\n    args: { n: 1.5e300, s: '1e400', t: \"nan\", u: inf, v: !!str 12, w: [1, 2] }\n  - id: b\n";
        assert_eq!(check_yaml(text), Ok(()));
        assert_eq!(check_yaml("a: &x {k: 1}\nb: *x\nc: *x\n"), Ok(()));
        assert_eq!(
            check_yaml("not: [valid"),
            Ok(()),
            "left to the deserializer"
        );
    }
}
