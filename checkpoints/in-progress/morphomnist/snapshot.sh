#!/bin/bash
# Copy the Morpho-MNIST runs into checkpoints/in-progress (finished side models without trainer_state.safetensors).
cd "$(dirname "$0")/../.."
D=checkpoints/in-progress/morphomnist
mkdir -p $D
for m in runs/morpho/*/; do
  [ -f $m/trainer_state.json ] || continue   # packed SCMs and scratch folders are not runs
  n=$(basename $m); mkdir -p $D/$n
  cp $m/config.json $m/model.safetensors $m/trainer_state.json $D/$n/ 2>/dev/null
  # the trainer state only while the run is unfinished (its step below the configured steps)
  if [ -f $m/trainer_state.safetensors ] && python3 -c "import json,sys; s=json.load(open(sys.argv[1])); sys.exit(s['step'] >= s['train']['steps'])" $m/trainer_state.json; then
    cp $m/trainer_state.safetensors $D/$n/
  else rm -f $D/$n/trainer_state.safetensors; fi
  true
done
cp runs/morpho/*.sh $D/
[ -f runs/morpho/front_rows.jsonl ] && cp runs/morpho/front_rows.jsonl $D/
ls $D
