set -x
C=/work/corpus/gsm8k-easy
adaptivestep bench prm-quality --corpus $C --questions 20 --eval rest --rest-after 20 --method confidence --backbones smollm2-135m --sizes 16 --folds 2 --train-modes lora --train-epochs 3 --out lora20.json > lora20.log 2>&1
adaptivestep bench prm-quality --pair lora20.json lora20.json --pair-scorer lora:smollm2-135m prm:smollm2-135m > pair20.log 2>&1
adaptivestep bench prm-quality --corpus $C --questions 40 --eval rest --rest-after 40 --method confidence --backbones smollm2-135m --sizes 32 --folds 2 --train-modes lora --train-epochs 3 --out lora40.json > lora40.log 2>&1
adaptivestep bench prm-quality --pair lora40.json lora40.json --pair-scorer lora:smollm2-135m prm:smollm2-135m > pair40.log 2>&1
date
