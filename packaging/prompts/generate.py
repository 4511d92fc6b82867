#!/usr/bin/env python3
"""Generates callbridge's default prompts: 8 kHz, 16-bit PCM, mono WAV files.

Reproducible (standard library only, no timestamps in WAV headers): running it again writes
byte-identical files. Usage: python3 packaging/prompts/generate.py [OUTPUT_DIR]
(default: the directory of this script).
"""

import math
import os
import struct
import sys
import wave

RATE = 8000  # Hz: narrowband telephony, what G.711 carries
AMPLITUDE = 0.25  # of full scale, about -12 dBFS: clearly audible, no clipping after G.711
FADE_S = 0.005  # 5 ms raised-cosine ramps: no click at the start and end of a tone


def tone(freq_hz, seconds):
    n = round(RATE * seconds)
    fade = round(RATE * FADE_S)
    samples = []
    for i in range(n):
        gain = 1.0
        edge = min(i, n - 1 - i)
        if edge < fade:
            gain = 0.5 - 0.5 * math.cos(math.pi * edge / fade)
        value = AMPLITUDE * gain * math.sin(2 * math.pi * freq_hz * i / RATE)
        samples.append(round(value * 32767))
    return samples


def silence(seconds):
    return [0] * round(RATE * seconds)


def write(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)  # 16-bit
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % len(samples), *samples))


PROMPTS = {
    "beep.wav": lambda: tone(1000, 0.2),
    "silence-1s.wav": lambda: silence(1.0),
    "tone-440-1s.wav": lambda: tone(440, 1.0),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    for name, make in PROMPTS.items():
        path = os.path.join(out, name)
        write(path, make())
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
