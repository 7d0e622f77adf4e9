#!/usr/bin/env bash
# Set up a virtual environment in .venv with ssamba and its test dependencies.
# Safe to re-run. Installs the CPU build of PyTorch first where no torch is present,
# so that pip does not pull a multi-GB CUDA build; set SSAMBA_TORCH to pick another
# torch requirement (e.g. SSAMBA_TORCH="torch==2.13.0").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing ${SSAMBA_TORCH:-torch==2.13.0} (CPU build)"
    pip install "${SSAMBA_TORCH:-torch==2.13.0}"
fi
# System packages (Debian/Ubuntu): the General MIDI SoundFont of the 'sounds' corpus
# (FluidR3Mono, MIT licence, ~19 MB); g++ builds the fast CPU scan.
need=()
[ -f /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 ] || [ -n "${SSAMBA_SOUNDFONT:-}" ] || need+=(fluidr3mono-gm-soundfont)
command -v g++ >/dev/null 2>&1 || need+=(g++)
.venv/bin/python -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "[setup] installing system packages: ${need[*]}"
        $sudo apt-get update -q >/dev/null
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "[setup] please install: ${need[*]} (Debian/Ubuntu names), or set SSAMBA_SOUNDFONT to a GM SoundFont" >&2
    fi
fi
echo "[setup] installing ssamba (editable) with the demo, hub, onnx and test extras"
pip install -e ".[demo,hub,onnx,test]"
# The SoundFont renderer without its declared PyAudio (playback only; it would compile).
pip install --no-deps "tinysoundfont>=0.3.7"
# Real recordings for the pretraining pool: speech, music and sound effects that Debian
# packages ship (ssamba.corpora.recordings lists them with their licences, ~0.95 GB).
# Fetched with apt-get download and unpacked into the cache, not installed: nothing of
# theirs runs, and their games' dependencies stay out. Without apt the demo says so and
# pretrains on the synthetic pool alone.
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    dest=${SSAMBA_RECORDINGS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ssamba/recordings}
    packages=$(.venv/bin/python -c "from ssamba.corpora.recordings import PACKAGES; print(' '.join(PACKAGES))")
    fetch=()
    for p in $packages; do
        [ -f "$dest/$p/.unpacked" ] || dpkg -s "$p" >/dev/null 2>&1 || fetch+=("$p")
    done
    if [ ${#fetch[@]} -gt 0 ]; then
        echo "[setup] fetching real recordings for the pretraining pool into $dest: ${fetch[*]}"
        mkdir -p "$dest"
        debs=$(mktemp -d "$dest/.fetch.XXXXXX")
        updated=""
        for p in "${fetch[@]}"; do
            if ! (cd "$debs" && apt-get download -q "$p" >/dev/null 2>&1) && [ -z "$updated" ]; then
                updated=1  # package lists missing or stale: refresh once, then try again
                sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
                $sudo apt-get update -q >/dev/null 2>&1 || true
                (cd "$debs" && apt-get download -q "$p" >/dev/null 2>&1) || true
            fi
            deb=$(ls "$debs"/"${p}"_*.deb 2>/dev/null | head -n 1)
            if [ -z "$deb" ]; then
                echo "[setup] could not fetch $p; the pool goes without it"
                continue
            fi
            rm -rf "${dest:?}/$p" && mkdir -p "$dest/$p"
            dpkg-deb -x "$deb" "$dest/$p" && touch "$dest/$p/.unpacked"
            rm -f "$deb"
        done
        rm -rf "$debs"
    fi
else
    echo "[setup] no apt-get here: the demo pretrains on the synthetic pool alone (its real recordings are Debian packages)"
fi
.venv/bin/python -c "import torch, ssamba; print(f'[setup] ready: ssamba {ssamba.__version__}, torch {torch.__version__}')"
