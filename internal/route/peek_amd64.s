#include "textflag.h"

// func peekSlot(p *slot) (h uint64, i uint32)
TEXT ·peekSlot(SB), NOSPLIT|NOFRAME, $0-20
	MOVQ	p+0(FP), AX
	MOVQ	0(AX), BX
	MOVL	8(AX), CX
	MOVQ	BX, h+8(FP)
	MOVL	CX, i+16(FP)
	RET
