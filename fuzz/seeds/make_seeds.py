#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/.

Run once when a target is added (the committed corpora started from these, then grew and were
minimized by `cargo fuzz cmin`): python3 fuzz/seeds/make_seeds.py
"""
import base64
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


SDP_OFFER = crlf("""v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.101
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49170 RTP/AVP 0 8 9 111 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1; maxplaybackrate=16000; stereo=0
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")

SDP_SRTP = crlf("""v=0
o=- 4858 1 IN IP6 2001:db8::1
s=call
c=IN IP6 2001:db8::1
b=AS:64
t=0 0
m=video 0 RTP/AVP 96
m=audio 30000 RTP/SAVP 8 101
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e|2^20|1:4 KDR=0
a=crypto:2 AEAD_AES_128_GCM inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHA==
a=rtcp:30001 IN IP6 2001:db8::1
a=rtcp-mux
a=ptime:30
a=recvonly
m=audio 30002 RTP/AVPF 0
a=inactive
""")

SDP_HOLD = crlf("""v=0
o=pbx 1 2 IN IP4 0.0.0.0
s=-
t=0 0
m=audio 4000 RTP/AVP 18 0
c=IN IP4 0.0.0.0
a=rtpmap:18 G729/8000
a=sendonly
""")


def sip(start, headers, body=""):
    lines = [start] + headers + ["Content-Length: %d" % len(body.encode()), "", ""]
    return "\r\n".join(lines) + body


INVITE = sip("INVITE sip:bob@biloxi.example.com:5062;transport=udp SIP/2.0", [
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@192.0.2.101:5060>",
    "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
    "Route: <sip:p3.example.com;lr>",
    "Content-Type: application/sdp",
], SDP_OFFER)

RESPONSE = sip("SIP/2.0 180 Ringing", [
    "Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKnashds8;received=192.0.2.3",
    "v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK77ef4c2312983.1",
    "To: <sip:bob@example.com>;tag=a6c85cf",
    "f: <sip:alice@example.com>;tag=1928301774",
    "i: a84b4c76e66710",
    "CSeq: 314159 INVITE",
    "m: <sips:bob@192.0.2.4;transport=tls>;expires=60",
    "Require: 100rel",
    "RSeq: 1",
])

# RFC 4475 §3.1.1.1 "wsinv" (a short tortuous INVITE), trimmed to what the parser sees.
TORTUOUS = crlf("""INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
""")

REGISTER = "REGISTER tel:+1234;x=y SIP/2.0\nVia: SIP/2.0/TCP h\n ;branch=z9hG4bK2\nTo: <tel:+1234>\nContact: *\nContent-Length: 0\n\n"

OPTIONS = sip("OPTIONS sip:[2001:db8::10]:5060 SIP/2.0", [
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKopt",
    "From: <sip:probe@192.0.2.1>;tag=x",
    "To: <sip:ms@192.0.2.10>",
    "Call-ID: opt-1",
    "CSeq: 7 OPTIONS",
    "Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"0123\"",
    "Accept: application/sdp",
])

put("sip_message", "invite", INVITE)
put("sip_message", "response", RESPONSE)
put("sip_message", "rfc4475-wsinv", TORTUOUS)
put("sip_message", "register-tel", REGISTER)
put("sip_message", "options", OPTIONS)
put("sip_message", "keepalive-then-bye", "\r\n\r\n" + sip("BYE sip:a@b SIP/2.0", [
    "Via: SIP/2.0/TCP h;branch=z9hG4bKb", "From: <sip:x@y>;tag=1", "To: <sip:a@b>;tag=2",
    "Call-ID: c", "CSeq: 2 BYE"]))

put("sdp_parse_negotiate", "offer", SDP_OFFER)
put("sdp_parse_negotiate", "srtp-ipv6", SDP_SRTP)
put("sdp_parse_negotiate", "hold-lf", SDP_HOLD.replace("\r\n", "\n"))
put("sdp_parse_negotiate", "answer-opus", crlf("""v=0
o=callbridge 1 1 IN IP4 192.0.2.10
s=callbridge
c=IN IP4 198.51.100.7
t=0 0
m=audio 40000 RTP/AVP 111 110
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1; maxplaybackrate=48000; stereo=0
a=rtpmap:110 telephone-event/48000
a=ptime:20
a=sendrecv
"""))


def rtp(pt, seq, ts, ssrc, payload, marker=False, csrcs=(), ext=None, pad=0):
    b0 = 0x80 | len(csrcs)
    if ext is not None:
        b0 |= 0x10
    if pad:
        b0 |= 0x20
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    head += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        profile, data = ext
        head += struct.pack("!HH", profile, len(data) // 4) + data
    tail = b"\0" * (pad - 1) + bytes([pad]) if pad else b""
    return head + payload + tail


def rtcp_sr(ssrc, ntp, ts, blocks):
    body = struct.pack("!IQIII", ssrc, ntp, ts, 100, 16000)
    for (s, frac, lost, ext, jit, lsr, dlsr) in blocks:
        body += struct.pack("!IB", s, frac) + lost.to_bytes(3, "big") + struct.pack("!IIII", ext, jit, lsr, dlsr)
    return struct.pack("!BBH", 0x80 | len(blocks), 200, len(body) // 4) + body


def rtcp_sdes(ssrc, cname):
    item = bytes([1, len(cname)]) + cname + b"\0"
    chunk = struct.pack("!I", ssrc) + item
    chunk += b"\0" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


def rtcp_bye(ssrc, reason=b""):
    body = struct.pack("!I", ssrc)
    if reason:
        body += bytes([len(reason)]) + reason
        body += b"\0" * (-len(body) % 4)
    return struct.pack("!BBH", 0x81, 203, len(body) // 4) + body


def series(*packets):
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)


PCMU = rtp(0, 1000, 160000, 0xCAFEBABE, bytes([0xFF] * 160), marker=True)
EXT = rtp(8, 7, 8000, 0x11111111, bytes(80), csrcs=(1, 2),
          ext=(0xBEDE, bytes([0x10, 0xAA, 0x21, 1, 2, 0, 0, 0])))
TWO_BYTE = rtp(111, 65535, 1, 2, b"\xfc\xff\xfe", ext=(0x1000, bytes([1, 2, 9, 9, 0, 0, 0, 0])), pad=4)
DTMF = [rtp(101, 10 + i, 4000, 0xCAFEBABE, bytes([5, (0x80 if i >= 2 else 0) | 10]) + struct.pack("!H", 160 * (i + 1)), marker=(i == 0)) for i in range(4)]
SR = rtcp_sr(0xCAFEBABE, 0xE000000100000000, 160000, [(0x12345678, 12, 3, 1010, 40, 0xE0000000, 65536)])
COMPOUND = SR + rtcp_sdes(0xCAFEBABE, b"alice@192.0.2.101")
RR_BYE = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFEBABE) + rtcp_bye(0xCAFEBABE, b"hung up")

put("rtp_rtcp", "pcmu", PCMU)
put("rtp_rtcp", "csrc-one-byte-ext", EXT)
put("rtp_rtcp", "two-byte-ext-padding", TWO_BYTE)
put("rtp_rtcp", "sr-sdes", COMPOUND)
put("rtp_rtcp", "rr-bye", RR_BYE)
put("rtp_rtcp", "series", series(PCMU, rtp(0, 1001, 160160, 0xCAFEBABE, bytes(160)), *DTMF, COMPOUND,
                                  rtp(0, 1003, 160480, 0xCAFEBABE, bytes(160)), RR_BYE))

for profile in range(3):
    put("srtp_unprotect", "series-%d" % profile, bytes([profile, 17]) + series(
        PCMU, rtp(0, 1001, 160160, 0xCAFEBABE, bytes(160)), EXT, COMPOUND, RR_BYE))
put("srtp_unprotect", "raw-srtp", bytes([0, 0]) + PCMU + bytes(10))
put("srtp_unprotect", "raw-srtcp", bytes([2, 0]) + COMPOUND + struct.pack("!I", 0x80000001) + bytes(16))


def wav(tag, channels, rate, bits, data, extensible=False, extra_chunks=b"", data_size=None):
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 3) + guid
    elif tag == 1:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    else:
        fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * block, block, bits, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    if len(data) % 2:
        body += b"\0"
    return b"RIFF" + struct.pack("<I", len(body)) + body


put("wav_reader", "pcm16-mono", wav(1, 1, 8000, 16, struct.pack("<8h", 0, 1000, 2000, 1000, 0, -1000, -2000, -1000)))
put("wav_reader", "ulaw-stereo-fact", wav(7, 2, 8000, 8, bytes([0xFF, 0x7F, 0x80, 0x00, 0x12]),
                                          extra_chunks=b"fact" + struct.pack("<II", 4, 2)))
put("wav_reader", "alaw-list-odd", wav(6, 1, 8000, 8, b"\xd5\x55\x2a", extra_chunks=b"LIST" + struct.pack("<I", 3) + b"abc\0"))
put("wav_reader", "pcm8-extensible", wav(1, 1, 16000, 8, bytes(range(0, 256, 16)), extensible=True))
put("wav_reader", "streaming-size", wav(1, 2, 48000, 16, bytes(17), data_size=0xFFFFFFFF))

CONTROL = {
    "ReserveConnection": {"MmsId": "1", "MediaRxCodec": "G711u", "Timeout": 30000},
    "CreateConnection": {"MediaTxIP": "192.0.2.20", "MediaTxPort": 4000, "MediaRxCodec": "G711u",
                         "MediaRxFramesize": 20, "MediaTxCodec": "G711a", "MediaTxFramesize": "30",
                         "MediaTxControlIP": "192.0.2.20", "MediaTxControlPort": 4001},
    "ModifyConnection": {"ConnectionId": "1", "MediaTxIP": "2001:db8::5", "MediaTxPort": "4002"},
    "DeleteConnection": {"ConnectionId": "3"},
    "CreateConference": {"ConnectionId": "0", "MediaTxIP": "192.0.2.20", "MediaTxPort": 4000,
                         "Hairpin": True, "Monitor": "false", "TariffTone": 1, "SoundToneOnJoin": "true"},
    "JoinConference": {"ConferenceId": "7", "ConnectionId": "9", "ReceiveOnly": True, "Coach": "2"},
    "LeaveConference": {"ConferenceId": "7", "ConnectionId": "9"},
    "SetConfereeAttribute": {"ConferenceId": "7", "ConnectionId": "9", "Mute": True, "Pupil": "false"},
    "Play": {"ConnectionId": "4", "Prompt1": "welcome.wav", "Prompt2": "digits/1.wav",
             "TermCondDigit": "#", "TermCondMaxTime": 30000, "Volume": -3, "Speed": "2",
             "State": "greeting", "Application": "sales", "Locale": "en"},
    "PlayTone": {"ConnectionId": "4", "Frequency1": 440, "Frequency2": 480, "Amplitude1": -13,
                 "Amplitude2": -13, "Duration": 2000},
    "GatherDigits": {"ConnectionId": "4", "TermCondMaxDigits": 4, "TermCondDigitList": "#*",
                     "TermCondInterDigitDelay": 3000, "TermCondDigitPattern": "12*"},
    "SendDigits": {"ConnectionId": "4", "Digits": "123#*ABCD"},
    "Record": {"ConnectionId": "4", "Filename": "rec.wav", "AudioFileFormat": "wav",
               "AudioFileEncoding": "ulaw", "AudioFileSampleRate": 8000, "AudioFileSampleSize": 8,
               "TermCondSilence": 3000, "Expires": 1},
    "StopMediaOperation": {"ConnectionId": "4", "OperationId": "2", "Block": True},
    "AdjustPlay": {"ConnectionId": "4", "Volume": 2, "Speed": -1, "AdjustmentType": "relative",
                   "ToggleType": 1},
    "VoiceRecognition": {"ConnectionId": "4", "DetectSilence": True, "SilenceTime": 2000,
                         "DetectNonSilence": "true", "NonSilenceTime": 100, "CommandTimeout": 5000},
    "MakeCall": {"To": "sip:bob@192.0.2.30", "From": "1000", "DisplayName": "Alice",
                 "WaitForMedia": "Yes", "Conference": "new", "Trunk": "pstn", "MmsId": "1",
                 "Hairpin": False, "Timeout": 60},
    "AcceptCall": {"CallId": "12", "EarlyMedia": True},
    "AnswerCall": {"CallId": "12", "ConferenceId": "4"},
    "RejectCall": {"CallId": "12", "Status": 486},
    "Redirect": {"CallId": "12", "To": "tel:+15551234"},
    "Hangup": {"CallId": "12"},
    "BlindTransfer": {"CallId": "12", "To": "2000"},
    "SendUserInput": {"CallId": "12", "Digits": "5"},
    "Barge": {"CallId": "12", "ConferenceId": "3"},
    "BridgeCalls": {"CallId": "12", "PeerCallId": "13", "ProxyDTMFCallId": "12"},
    "UnbridgeCalls": {"CallId": "12"},
}
for name, params in CONTROL.items():
    put("control_json", name, name + "\n" + json.dumps(params))
put("control_json", "empty-body", "DeleteConnection\n \n")
put("control_json", "not-object", "Play\n[1,2,{\"a\":null}]")

VERBA = [
    ("token", "action=RequestToken&apiKey=k3y-0123456789abcdef&responseType=TEXT\nuserName=alice&password=p%40ss"),
    ("delete", "action=DeleteCall&apiKey=key&token=t0k&callID=5f0c6c5e-2a35-4d64-9d3f-0a1b2c3d4e5f\n"),
    ("keep", "action=KeepCall&apiKey=key&extension=3123212312&status=ongoing,next&responseType=HTML\n"),
    ("mute", "action=MuteRecording&apiKey=key&cid=abc&mute=1\n"),
    ("search", "action=SearchCalls&apiKey=key&startGMT=2024-01-01%2000:00:00&endGMT=2024-01-02%2000:00:00&page=2&pagelen=50\n"),
    ("media", "action=GetMediaEncoded&apiKey=key&platformCallID=pc-1&format=OGG\n"),
    ("url-form", "\naction=GetCallURL&apiKey=key&nativeID=%3Cx%26y%3E&meetingID=m1"),
    ("callid-xml", "action=GetCallID&apiKey=key&extension=%3C%2F%3E%22%26%01\n"),
    ("unknown", "action=Foo%00&responseType=xml\n"),
]
for name, text in VERBA:
    put("verba_request", name, text)

AGENT = [
    ("signin", {"password": "secret", "phonenum": "88001", "autoanswer": "true", "releasephone": False,
                "agenttype": "4", "status": 5}),
    ("requestagentconf", {"confType": 1, "length": 60, "addresses": [{"address": "1001", "addressType": "6"},
                          {"address": "sip:x@192.0.2.1", "addressType": 2}], "promptTime": 5, "playMode": 2,
                          "fileName": "tone.wav", "beepTone": True}),
    ("batchadd", {"addresses": [{"address": "1002", "addressType": 6, "mode": 1}]}),
    ("batchremove", {"addresses": ["1002", "1003"]}),
    ("changemode", {"address": "1002", "addressType": 6, "mode": 3}),
    ("target", {"address": "5551234", "addressType": 5}),
    ("prolong", {"prolongTime": 30.0}),
    ("shiftpresident", {"destAgentNo": "20001"}),
]
for name, body in AGENT:
    put("agent_gateway_request", name, json.dumps(body))
put("agent_gateway_request", "agentid", "12345")
put("agent_gateway_request", "push", json.dumps({"password": "", "phonenum": "1", "callBackUri": "x", "serviceToken": "y"}))

CTI = [
    ("register", "RequestRegisterAddress", {"ThisDN": "*", "ReferenceID": 1}),
    ("release", "RequestReleaseCall", {"ThisDN": "1001", "ConnID": "0001a2b3c4d5e6f7", "ReferenceID": 7}),
    ("makecall", "RequestMakeCall", {"ThisDN": "1001", "OtherDN": "sip:bob@192.0.2.30", "Trunk": None}),
    ("delete", "RequestDeleteFromConference", {"ThisDN": "1001", "ConnID": "00000000000000ff", "OtherDN": "1002"}),
    ("complete", "RequestCompleteTransfer", {"ThisDN": "1001", "ConnID": "ffffffffffffffff"}),
    ("hold", "RequestHoldCall", {"ThisDN": "1001", "ConnID": "0123456789abcdef"}),
    ("query", "RequestQueryAddress", {"ThisDN": "1001", "ReferenceID": 18446744073709551615}),
]
for name, request, fields in CTI:
    frame = dict(fields, Request=request)
    put("cti_request", name, request + "\n" + json.dumps(frame))
put("cti_request", "empty-post", "RequestQueryCall\n")
