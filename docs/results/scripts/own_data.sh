#!/usr/bin/env bash
# The runs of docs/results/own-data.md: rnndrop classify on IMDB (its folder layout, as a user
# would point at it) and on the Pang & Lee scale data (a TSV made with paste), for the dropout
# schemes none / naive / variational. One torch thread per run.
#   bash docs/results/scripts/own_data.sh imdb|scaledata OUTDIR
set -euo pipefail
what=$1; out=$2
data=${RNNDROP_DATA:-../shared/data}
mkdir -p "$out"
case $what in
imdb)
  # the user's step: extract the archive
  [ -d "$out/aclImdb" ] || tar xzf "$data/imdb/aclImdb_v1.tar.gz" -C "$out"
  for scheme in none naive variational; do
    python -m rnndrop classify train --data "$out/aclImdb/train" --test "$out/aclImdb/test" \
      --recipe configs/classify-lstm.toml --out "$out/imdb-$scheme" --threads 1 --no-progress \
      --set model.scheme=$scheme --set data.max_len=200 --set train.batch_size=64 \
      --set train.epochs=4 --set train.mc_samples=10 2>&1 | tee "$out/imdb-$scheme.log"
  done ;;
scaledata)
  tsv="$out/ratings.tsv"
  (printf 'label\ttext\n'
   for c in Dennis+Schwartz James+Berardinelli Scott+Renshaw Steve+Rhodes; do
     paste "$data/scaledata/scaledata/$c/rating.$c" "$data/scaledata/scaledata/$c/subj.$c"
   done) > "$tsv"
  for scheme in none naive variational; do
    python -m rnndrop classify train --data "$tsv" --recipe configs/classify-regression.toml \
      --out "$out/ratings-$scheme" --threads 1 --no-progress --set model.scheme=$scheme \
      2>&1 | tee "$out/ratings-$scheme.log"
  done ;;
*) echo "usage: $0 imdb|scaledata OUTDIR" >&2; exit 2 ;;
esac
