//! The answer to a `/verba/api` request, [`VerbaResponse`], and its three renderings: XML
//! (Verba's `<VerbaApi><Response .../></VerbaApi>`, seed 04), HTML (a page for a browser) and
//! TEXT (`name=value` lines).
//!
//! Owns: the document layouts, the call-record (`verbacdr`) fields and their text forms (times
//! as `YYYY-MM-DD hh:mm:ss` GMT, durations in whole seconds), and the escaping: every value
//! goes through quick-xml (XML and HTML alike), and control characters in values become
//! U+FFFD in all three formats so no value can break a document or forge a TEXT line.
//! Must not: decide outcomes or codes (the handler builds the response), read a clock (an
//! ongoing call has no duration), or do I/O.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::codes::{VerbaError, OK};
use super::request::ResponseType;
use crate::store::model::{CallRecord, RecordingRecord, SearchQuery, UnixMs};

/// What the handler answers; rendered with [`VerbaResponse::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerbaResponse {
    /// The action's name (`Action::name`, or `request::action_name` when parsing failed).
    pub action: &'static str,
    /// 0 or one of the `codes` constants.
    pub code: i32,
    /// Result values, on `<Response>` in XML, in order: `callID`, `token`, `url`, `total`, ...
    pub attributes: Vec<(&'static str, String)>,
    /// Call records: `SearchCalls`' page, or the record `GetCallID` may include.
    pub calls: Vec<CallRecord>,
    /// The error's sentence (`<ErrorMessage>`).
    pub error: Option<String>,
}

/// The `verbacdr` fields of a call, in document order (`recordings` follows them).
pub const CDR_FIELDS: [&str; 11] = [
    "ccdr_id",
    "platformCallID",
    "nativeID",
    "meetingID",
    "calling",
    "called",
    "direction",
    "start",
    "answer",
    "end",
    "duration",
];

impl VerbaResponse {
    /// Success (code 0) with nothing more yet; add values with [`Self::with`].
    pub fn ok(action: &'static str) -> VerbaResponse {
        VerbaResponse {
            action,
            code: OK,
            attributes: Vec::new(),
            calls: Vec::new(),
            error: None,
        }
    }

    /// A failure: the error's code and message.
    pub fn error(action: &'static str, error: VerbaError) -> VerbaResponse {
        VerbaResponse {
            code: error.code,
            error: Some(error.message),
            ..VerbaResponse::ok(action)
        }
    }

    /// Adds an attribute (`callID`, `token`, `url`, ...).
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> VerbaResponse {
        self.attributes.push((name, value.into()));
        self
    }

    /// `SearchCalls`' answer: one page of calls, with `total` (all matches, every page),
    /// `page` and `pagelen`.
    pub fn search_results(
        calls: Vec<CallRecord>,
        total: u64,
        query: &SearchQuery,
    ) -> VerbaResponse {
        VerbaResponse {
            calls,
            ..VerbaResponse::ok("SearchCalls")
                .with("total", total.to_string())
                .with("page", query.page.to_string())
                .with("pagelen", query.page_len.to_string())
        }
    }

    /// The body in the asked format, with its `Content-Type`.
    pub fn render(&self, response_type: ResponseType) -> (&'static str, String) {
        let body = match response_type {
            ResponseType::Xml => self.xml(),
            ResponseType::Html => self.html(),
            ResponseType::Text => self.text(),
        };
        (response_type.content_type(), body)
    }

    /// Whether a call list is shown: any calls, or a successful search (an empty list then
    /// says "nothing found").
    fn shows_calls(&self) -> bool {
        !self.calls.is_empty() || (self.action == "SearchCalls" && self.error.is_none())
    }

    /// `code`, `type` and the attributes, as shown.
    fn head(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut head = vec![
            ("code", Cow::Owned(self.code.to_string())),
            ("type", Cow::Borrowed(self.action)),
        ];
        head.extend(
            self.attributes
                .iter()
                .map(|(name, value)| (*name, printable(value))),
        );
        head
    }

    fn xml(&self) -> String {
        let mut doc = Document::new();
        doc.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        doc.start("VerbaApi", &[]);
        let mut response = BytesStart::new("Response");
        for (name, value) in self.head() {
            response.push_attribute((name, value.as_ref()));
        }
        if self.error.is_none() && !self.shows_calls() {
            doc.event(Event::Empty(response));
        } else {
            doc.event(Event::Start(response));
            if let Some(error) = &self.error {
                doc.text_element("ErrorMessage", error);
            }
            if self.shows_calls() {
                self.xml_calls(&mut doc);
            }
            doc.end("Response");
        }
        doc.end("VerbaApi");
        doc.finish()
    }

    fn xml_calls(&self, doc: &mut Document) {
        if self.calls.is_empty() {
            doc.empty("verbacdrlist", &[]);
            return;
        }
        doc.start("verbacdrlist", &[]);
        for call in &self.calls {
            doc.start("verbacdr", &[]);
            for (name, value) in cdr_values(call) {
                doc.value_element(name, &value);
            }
            if call.recordings.is_empty() {
                doc.empty("recordings", &[]);
            } else {
                doc.start("recordings", &[]);
                for recording in &call.recordings {
                    let id = printable(&recording.recording_id);
                    let duration = recording_duration(recording);
                    let mut attributes = vec![
                        ("id", id.as_ref()),
                        ("state", recording.state.word()),
                        ("format", recording.format.word()),
                    ];
                    if !duration.is_empty() {
                        attributes.push(("duration", &duration));
                    }
                    doc.empty("recording", &attributes);
                }
                doc.end("recordings");
            }
            doc.end("verbacdr");
        }
        doc.end("verbacdrlist");
    }

    fn html(&self) -> String {
        let mut doc = Document::new();
        doc.event(Event::DocType(BytesText::from_escaped("html")));
        doc.start("html", &[("lang", "en")]);
        doc.start("head", &[]);
        doc.empty("meta", &[("charset", "utf-8")]);
        doc.text_element("title", self.action);
        doc.text_element("style", PAGE_STYLE);
        doc.end("head");
        doc.start("body", &[]);
        doc.text_element("h1", self.action);
        doc.start("table", &[]);
        for (name, value) in self.head() {
            doc.start("tr", &[]);
            doc.text_element("th", name);
            doc.text_element("td", &value);
            doc.end("tr");
        }
        doc.end("table");
        if let Some(error) = &self.error {
            doc.start("p", &[("class", "error")]);
            doc.text(error);
            doc.end("p");
        }
        if self.shows_calls() {
            self.html_calls(&mut doc);
        }
        doc.end("body");
        doc.end("html");
        doc.finish()
    }

    fn html_calls(&self, doc: &mut Document) {
        if self.calls.is_empty() {
            doc.text_element("p", "No calls.");
            return;
        }
        doc.start("table", &[("class", "calls")]);
        doc.start("tr", &[]);
        for name in CDR_FIELDS.iter().chain(&["recordings"]) {
            doc.text_element("th", name);
        }
        doc.end("tr");
        for call in &self.calls {
            doc.start("tr", &[]);
            for (_, value) in cdr_values(call) {
                doc.text_element("td", &value);
            }
            doc.text_element("td", &recordings_summary(call));
            doc.end("tr");
        }
        doc.end("table");
    }

    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .head()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if let Some(error) = &self.error {
            lines.push(format!("error={}", printable(error)));
        }
        for call in &self.calls {
            let mut fields = cdr_values(call).into_iter();
            let id = fields.next().map(|(_, v)| v).unwrap_or_default();
            let mut line = format!("call={id}");
            for (name, value) in fields {
                line.push_str(&format!("\t{name}={value}"));
            }
            line.push_str(&format!("\trecordings={}", recordings_summary(call)));
            lines.push(line);
        }
        let mut body = lines.join("\n");
        body.push('\n');
        body
    }
}

/// Enough style that the HTML tables read as tables; no character in it needs escaping.
const PAGE_STYLE: &str = "body{font-family:sans-serif}table{border-collapse:collapse;\
margin-bottom:1em}th,td{border:1px solid #999;padding:2px 6px;text-align:left}\
.error{color:#b00}";

/// A call's `verbacdr` values, named as [`CDR_FIELDS`]; absent ones empty, all printable.
fn cdr_values(call: &CallRecord) -> Vec<(&'static str, String)> {
    let optional = |value: &Option<String>| {
        value
            .as_deref()
            .map(|v| printable(v).into_owned())
            .unwrap_or_default()
    };
    let time = |ms: Option<UnixMs>| ms.map(gmt).unwrap_or_default();
    let duration = call
        .ended_ms
        .map(|end| (end.saturating_sub(call.started_ms).max(0) / 1000).to_string())
        .unwrap_or_default();
    let values = [
        printable(&call.call_id).into_owned(),
        optional(&call.platform_call_id),
        optional(&call.native_id),
        optional(&call.meeting_id),
        printable(&call.calling).into_owned(),
        printable(&call.called).into_owned(),
        call.direction.word().to_string(),
        gmt(call.started_ms),
        time(call.answered_ms),
        time(call.ended_ms),
        duration,
    ];
    CDR_FIELDS.into_iter().zip(values).collect()
}

/// A recording's length in whole seconds, empty while it is written.
fn recording_duration(recording: &RecordingRecord) -> String {
    recording
        .duration_ms
        .map(|ms| (ms / 1000).to_string())
        .unwrap_or_default()
}

/// `id:state` per recording, comma-separated (HTML and TEXT).
fn recordings_summary(call: &CallRecord) -> String {
    let items: Vec<String> = call
        .recordings
        .iter()
        .map(|r| format!("{}:{}", printable(&r.recording_id), r.state.word()))
        .collect();
    items.join(",")
}

/// `YYYY-MM-DD hh:mm:ss` in GMT; empty for a time before 1970 or after 9999 (which the store
/// never writes, and the formatter cannot show).
pub fn gmt(ms: UnixMs) -> String {
    const LAST_MS: UnixMs = 253_402_300_799_999;
    let Ok(unsigned) = u64::try_from(ms) else {
        return String::new();
    };
    if ms > LAST_MS {
        return String::new();
    }
    let time = UNIX_EPOCH + Duration::from_millis(unsigned);
    // `2024-03-01T10:00:00Z` → `2024-03-01 10:00:00`.
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// The value with every control character (CR, LF and TAB included) replaced by U+FFFD: XML
/// 1.0 cannot carry most of them, and in TEXT they would start a forged line.
fn printable(value: &str) -> Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect(),
    )
}

/// An XML (or HTML) document being written: one element per line, no indentation (the shape
/// of seed 04's samples), `<empty />` with a space as in the seed.
struct Document {
    writer: Writer<Vec<u8>>,
}

impl Document {
    fn new() -> Document {
        let mut writer = Writer::new_with_indent(Vec::new(), b' ', 0);
        writer.config_mut().add_space_before_slash_in_empty_elements = true;
        Document { writer }
    }

    fn event<'a>(&mut self, event: impl Into<Event<'a>>) {
        self.writer
            .write_event(event)
            .expect("writing to a Vec<u8> cannot fail");
    }

    fn start(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let start = BytesStart::new(name).with_attributes(attributes.iter().copied());
        self.event(Event::Start(start));
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let empty = BytesStart::new(name).with_attributes(attributes.iter().copied());
        self.event(Event::Empty(empty));
    }

    fn end(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }

    /// Escaped, control characters replaced.
    fn text(&mut self, text: &str) {
        self.event(Event::Text(BytesText::new(&printable(text))));
    }

    /// `<name>text</name>` on one line, also when empty (HTML has no `<td />`).
    fn text_element(&mut self, name: &str, text: &str) {
        self.start(name, &[]);
        self.text(text);
        self.end(name);
    }

    /// XML values: `<name>text</name>`, or `<name />` when there is none.
    fn value_element(&mut self, name: &str, text: &str) {
        if text.is_empty() {
            self.empty(name, &[]);
        } else {
            self.text_element(name, text);
        }
    }

    /// The document, ending with a newline.
    fn finish(self) -> String {
        let mut bytes = self.writer.into_inner();
        bytes.push(b'\n');
        String::from_utf8(bytes).expect("quick-xml writes the UTF-8 &strs it is given")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::verba::codes::{CALL_NOT_FOUND, INVALID_PARAMETER};
    use crate::store::model::{
        Direction, RecordPolicy, RecordingFormat, RecordingOrigin, RecordingState,
    };

    /// 2024-03-01 10:00:00 GMT.
    const T0: UnixMs = 1_709_287_200_000;

    const XML_HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VerbaApi>\n";

    fn recording(id: &str, state: RecordingState, format: RecordingFormat) -> RecordingRecord {
        RecordingRecord {
            recording_id: id.into(),
            call_id: "c".into(),
            path: format!("/var/lib/callbridge/{id}").into(),
            format,
            channels: 2,
            sample_rate: 8000,
            origin: RecordingOrigin::Policy,
            state,
            started_ms: T0,
            ended_ms: None,
            duration_ms: None,
            size_bytes: None,
            sha256: None,
            error: None,
            mutes: Vec::new(),
        }
    }

    /// A finished inbound call with a finished recording.
    fn finished_call() -> CallRecord {
        CallRecord {
            call_id: "c1".into(),
            connection: 7,
            direction: Direction::Inbound,
            platform_call_id: Some("a84b4c76e66710@pbx.example".into()),
            native_id: Some("00000000000000a1".into()),
            meeting_id: None,
            calling: "+4930123".into(),
            called: "8856".into(),
            trunk: None,
            policy: RecordPolicy::Always,
            started_ms: T0,
            answered_ms: Some(T0 + 2_000),
            ended_ms: Some(T0 + 65_500),
            end_cause: Some("remote-bye".into()),
            kept: false,
            delete_requested: false,
            node_id: 0,
            parties: Vec::new(),
            recordings: vec![RecordingRecord {
                duration_ms: Some(63_900),
                ..recording("r1", RecordingState::Finished, RecordingFormat::WavPcm16)
            }],
        }
    }

    /// An ongoing, unanswered outbound call in a conference, being recorded.
    fn ongoing_call() -> CallRecord {
        CallRecord {
            call_id: "c2".into(),
            direction: Direction::Outbound,
            platform_call_id: None,
            native_id: None,
            meeting_id: Some("WHBFM6DD".into()),
            calling: "8856".into(),
            called: "200".into(),
            started_ms: T0 + 300_000,
            answered_ms: None,
            ended_ms: None,
            end_cause: None,
            recordings: vec![recording(
                "r2",
                RecordingState::Recording,
                RecordingFormat::OggOpus,
            )],
            ..finished_call()
        }
    }

    fn search(calls: Vec<CallRecord>) -> VerbaResponse {
        let query = SearchQuery {
            from_ms: T0,
            to_ms: T0 + 3_600_000,
            number: None,
            page_len: 100,
            page: 0,
        };
        let total = calls.len() as u64;
        VerbaResponse::search_results(calls, total, &query)
    }

    fn seed_error() -> VerbaResponse {
        let e = VerbaError::call_not_found_for_extension("3123212312", "ongoing", 2, 1000);
        VerbaResponse::error("DeleteCall", e)
    }

    #[test]
    fn xml_success_is_the_seed_document() {
        let (content_type, body) = VerbaResponse::ok("DeleteCall").render(ResponseType::Xml);
        assert_eq!(content_type, "application/xml; charset=utf-8");
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <VerbaApi>\n\
             <Response code=\"0\" type=\"DeleteCall\" />\n\
             </VerbaApi>\n"
        );
    }

    #[test]
    fn xml_error_is_the_seed_document() {
        let (_, body) = seed_error().render(ResponseType::Xml);
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <VerbaApi>\n\
             <Response code=\"-50\" type=\"DeleteCall\">\n\
             <ErrorMessage>Call for extension 3123212312 with status ongoing not found after 2 \
             tries, with sleep time 1000.</ErrorMessage>\n\
             </Response>\n\
             </VerbaApi>\n"
        );
        assert_eq!(seed_error().code, CALL_NOT_FOUND);
    }

    #[test]
    fn xml_attributes_go_on_response_escaped() {
        let response = VerbaResponse::ok("RequestToken")
            .with("token", "09835e02-6c10-11e0-bb22-ba324924019b")
            .with(
                "url",
                "http://h/verba/api?action=GetMediaEncoded&cid=\"c1\"",
            );
        let (_, body) = response.render(ResponseType::Xml);
        let expected = format!(
            "{XML_HEAD}<Response code=\"0\" type=\"RequestToken\" \
             token=\"09835e02-6c10-11e0-bb22-ba324924019b\" \
             url=\"http://h/verba/api?action=GetMediaEncoded&amp;cid=&quot;c1&quot;\" />\n\
             </VerbaApi>\n"
        );
        assert_eq!(body, expected);
    }

    #[test]
    fn xml_search_with_two_calls() {
        let (_, body) = search(vec![finished_call(), ongoing_call()]).render(ResponseType::Xml);
        let expected = format!(
            "{XML_HEAD}\
<Response code=\"0\" type=\"SearchCalls\" total=\"2\" page=\"0\" pagelen=\"100\">
<verbacdrlist>
<verbacdr>
<ccdr_id>c1</ccdr_id>
<platformCallID>a84b4c76e66710@pbx.example</platformCallID>
<nativeID>00000000000000a1</nativeID>
<meetingID />
<calling>+4930123</calling>
<called>8856</called>
<direction>inbound</direction>
<start>2024-03-01 10:00:00</start>
<answer>2024-03-01 10:00:02</answer>
<end>2024-03-01 10:01:05</end>
<duration>65</duration>
<recordings>
<recording id=\"r1\" state=\"finished\" format=\"wav\" duration=\"63\" />
</recordings>
</verbacdr>
<verbacdr>
<ccdr_id>c2</ccdr_id>
<platformCallID />
<nativeID />
<meetingID>WHBFM6DD</meetingID>
<calling>8856</calling>
<called>200</called>
<direction>outbound</direction>
<start>2024-03-01 10:05:00</start>
<answer />
<end />
<duration />
<recordings>
<recording id=\"r2\" state=\"recording\" format=\"opus\" />
</recordings>
</verbacdr>
</verbacdrlist>
</Response>
</VerbaApi>
"
        );
        assert_eq!(body, expected);
    }

    #[test]
    fn xml_empty_and_failed_searches() {
        let (_, empty) = search(Vec::new()).render(ResponseType::Xml);
        assert_eq!(
            empty,
            format!(
                "{XML_HEAD}<Response code=\"0\" type=\"SearchCalls\" total=\"0\" page=\"0\" \
                 pagelen=\"100\">\n<verbacdrlist />\n</Response>\n</VerbaApi>\n"
            )
        );
        let failed = VerbaError::invalid_parameter("end", "must be after start");
        let (_, body) = VerbaResponse::error("SearchCalls", failed).render(ResponseType::Xml);
        assert!(!body.contains("verbacdrlist"), "{body}");
        assert!(body.contains(&format!("code=\"{INVALID_PARAMETER}\"")));
    }

    #[test]
    fn get_call_id_may_carry_its_record() {
        let mut response = VerbaResponse::ok("GetCallID").with("callID", "c1");
        response.calls.push(finished_call());
        let (_, body) = response.render(ResponseType::Xml);
        assert!(body.starts_with(&format!(
            "{XML_HEAD}<Response code=\"0\" type=\"GetCallID\" callID=\"c1\">\n\
             <verbacdrlist>\n<verbacdr>\n<ccdr_id>c1</ccdr_id>\n"
        )));
    }

    #[test]
    fn control_characters_never_reach_a_document() {
        let mut call = finished_call();
        call.calling = "100\u{0}\r\n<x>".into();
        let mut response = VerbaResponse::ok("GetCallID").with("callID", "c1\u{7}");
        response.calls.push(call);
        let (_, xml) = response.render(ResponseType::Xml);
        assert!(xml.contains("<calling>100\u{FFFD}\u{FFFD}\u{FFFD}&lt;x&gt;</calling>"));
        assert!(xml.contains("callID=\"c1\u{FFFD}\""));
        assert!(!xml.chars().any(|c| c.is_control() && c != '\n'), "{xml:?}");
    }

    #[test]
    fn html_page_escapes_everything() {
        let hostile = "<script>alert('x')</script>";
        let mut call = finished_call();
        call.calling = format!("\"><img src=x onerror=alert(1)>{hostile}");
        let mut response = VerbaResponse::error(
            "GetCallID",
            VerbaError::invalid_parameter("callID", hostile),
        )
        .with("callID", hostile);
        response.calls.push(call);
        let (content_type, page) = response.render(ResponseType::Html);
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;"));
        assert!(page.contains("<td>&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn html_page_layout() {
        let (_, page) = seed_error().render(ResponseType::Html);
        let expected = format!(
            "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\" />
<title>DeleteCall</title>
<style>{PAGE_STYLE}</style>
</head>
<body>
<h1>DeleteCall</h1>
<table>
<tr>
<th>code</th>
<td>-50</td>
</tr>
<tr>
<th>type</th>
<td>DeleteCall</td>
</tr>
</table>
<p class=\"error\">Call for extension 3123212312 with status ongoing not found after 2 \
tries, with sleep time 1000.</p>
</body>
</html>
"
        );
        assert_eq!(page, expected);
        let (_, list) = search(vec![finished_call(), ongoing_call()]).render(ResponseType::Html);
        assert_eq!(
            list.matches("<tr>").count(),
            5 + 3,
            "5 head rows, a header, 2 calls"
        );
        assert!(list.contains("<td>r1:finished</td>"));
        let (_, none) = search(Vec::new()).render(ResponseType::Html);
        assert!(none.contains("<p>No calls.</p>"));
    }

    #[test]
    fn text_lines() {
        let ok = VerbaResponse::ok("DeleteCall").with("callID", "c1");
        let (content_type, body) = ok.render(ResponseType::Text);
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert_eq!(body, "code=0\ntype=DeleteCall\ncallID=c1\n");
        let (_, body) = seed_error().render(ResponseType::Text);
        assert_eq!(
            body,
            "code=-50\ntype=DeleteCall\nerror=Call for extension 3123212312 with status \
             ongoing not found after 2 tries, with sleep time 1000.\n"
        );
        let forged = VerbaResponse::ok("GetCallURL").with("url", "u\ncode=0");
        assert_eq!(
            forged.render(ResponseType::Text).1,
            "code=0\ntype=GetCallURL\nurl=u\u{FFFD}code=0\n"
        );
    }

    #[test]
    fn text_search_has_one_line_per_call() {
        let (_, body) = search(vec![finished_call(), ongoing_call()]).render(ResponseType::Text);
        let expected = "code=0\ntype=SearchCalls\ntotal=2\npage=0\npagelen=100\n\
            call=c1\tplatformCallID=a84b4c76e66710@pbx.example\tnativeID=00000000000000a1\t\
            meetingID=\tcalling=+4930123\tcalled=8856\tdirection=inbound\t\
            start=2024-03-01 10:00:00\tanswer=2024-03-01 10:00:02\tend=2024-03-01 10:01:05\t\
            duration=65\trecordings=r1:finished\n\
            call=c2\tplatformCallID=\tnativeID=\tmeetingID=WHBFM6DD\tcalling=8856\t\
            called=200\tdirection=outbound\tstart=2024-03-01 10:05:00\tanswer=\tend=\t\
            duration=\trecordings=r2:recording\n";
        assert_eq!(body, expected);
    }

    #[test]
    fn gmt_times() {
        assert_eq!(gmt(0), "1970-01-01 00:00:00");
        assert_eq!(gmt(T0 + 999), "2024-03-01 10:00:00");
        assert_eq!(gmt(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(gmt(253_402_300_799_999), "9999-12-31 23:59:59");
        assert_eq!(gmt(253_402_300_800_000), "");
        assert_eq!(gmt(-1), "");
        assert_eq!(gmt(UnixMs::MAX), "");
    }
}
