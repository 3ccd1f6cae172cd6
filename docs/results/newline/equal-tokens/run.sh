set -x
C=/work/corpus/gsm8k-easy
B="--backbones smollm2-135m logprobs"
adaptivestep bench prm-quality --corpus $C --label-budget 121869 --eval rest --rest-after 20 --method confidence $B --sizes 16 32 64 --out conf.json > conf.log 2>&1
adaptivestep bench prm-quality --corpus $C --questions 18 --eval rest --rest-after 20 --method newline $B --sizes 16 32 64 --out newline.json > newline.log 2>&1
adaptivestep bench prm-quality --pair conf.json newline.json > pair.log 2>&1
adaptivestep bench prm-quality --pair conf.json newline.json --pair-on curve > pair-curve.log 2>&1
adaptivestep bench prm-quality --pair conf.json newline.json --pair-scorer prm:logprobs > pair-logprobs.log 2>&1
adaptivestep bench prm-quality --corpus $C --questions 40 --eval rest --rest-after 40 --method confidence $B --sizes 32 64 112 --out conf40.json > conf40.log 2>&1
adaptivestep bench prm-quality --corpus $C --label-budget 200592 --eval rest --rest-after 40 --method newline $B --sizes 32 64 112 --out newline28.json > newline28.log 2>&1
adaptivestep bench prm-quality --pair conf40.json newline28.json > pair40.log 2>&1
date
