# Sourced by the GPU-machine scripts that need diffusers (peers_step.sh, vae.sh): installs
# the carried wheels (.whl, see tools/peers_step_wheels.sh) into $SITE and puts it on
# PYTHONPATH. Expects PY and SITE set.
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
# Fallback wheels: only for distributions this interpreter does not have.
missing=$($PY - <<'PY'
import glob, re, zipfile
import importlib.metadata as md
for w in sorted(glob.glob(".whl/fallback/*.whl")):
    z = zipfile.ZipFile(w)
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    name = re.search(r"^Name: (.+)$", z.read(meta).decode(), re.M).group(1).strip()
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(w)
PY
)
if [[ -n $missing ]]; then
  echo "installing fallback wheels:" $missing
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $missing || exit 1
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
