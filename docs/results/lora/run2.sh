set -x
C=/work/corpus/gsm8k-easy
while pgrep -f "lora/run.sh|bash run.sh" >/dev/null; do sleep 20; done
adaptivestep bench prm-quality --corpus $C --questions 20 --eval rest --rest-after 20 --method confidence --backbones smollm2-135m --sizes 16 --folds 2 --train-modes lora --train-epochs 3 --train-lr 1e-3 --out lora20-lr1e-3.json > lora20-lr1e-3.log 2>&1
adaptivestep bench prm-quality --pair lora20-lr1e-3.json lora20-lr1e-3.json --pair-scorer lora:smollm2-135m prm:smollm2-135m > pair20-lr1e-3.log 2>&1
date
