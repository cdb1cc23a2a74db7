/*
 * A tiny multiboot guest for migration tests. It writes a counter into one
 * word of every 4 KiB page of a 16 MiB working set (16..32 MiB), round after
 * round, so memory stays dirty during migration, and prints "ops N" on the
 * serial port (0x3f8) after every 64 rounds. Each time the RTC's seconds
 * register changes it prints "rate N", the rounds done in that second: the
 * guest's own throughput, for the guest-penalty benchmark. Outside its
 * image, stack and two words of data, nothing else in RAM is touched.
 */
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000000
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .text
        .code32
        .globl _start
_start:
        mov $stack_top, %esp
        mov $banner, %esi
        call puts
        xor %ebx, %ebx              /* round counter */
round:
        mov $0x01000000, %edi       /* 16 MiB */
1:      mov %ebx, (%edi)
        add $4096, %edi
        cmp $0x02000000, %edi       /* 32 MiB */
        jb 1b
        inc %ebx
        /* Once per RTC second: "rate N", N = rounds completed in it. */
        mov $0x00, %al
        outb %al, $0x70
        inb $0x71, %al
        cmpb last_sec, %al
        je 6f
        movb %al, last_sec
        mov %ebx, %eax
        sub last_round, %eax
        mov %ebx, last_round
        mov $rate, %esi
        call puts
        call putdec
        mov $'\n', %al
        call putc
6:      test $63, %ebx
        jnz round
        mov $ops, %esi
        call puts
        mov %ebx, %eax
        call putdec
        mov $'\n', %al
        call putc
        jmp round

/* putc: AL to COM1, waiting for the transmitter. */
putc:   push %edx
        push %eax
        mov $0x3fd, %dx
2:      inb %dx, %al
        test $0x20, %al
        jz 2b
        pop %eax
        mov $0x3f8, %dx
        outb %al, %dx
        pop %edx
        ret

puts:   lodsb
        test %al, %al
        jz 3f
        call putc
        jmp puts
3:      ret

/* putdec: EAX in decimal. */
putdec: push %ebx
        mov $10, %ecx
        xor %ebx, %ebx              /* digit count */
4:      xor %edx, %edx
        div %ecx
        push %edx
        inc %ebx
        test %eax, %eax
        jnz 4b
5:      pop %eax
        add $'0', %al
        call putc
        dec %ebx
        jnz 5b
        pop %ebx
        ret

        .section .rodata
banner: .asciz "encmig test guest: dirtying 16 MiB\n"
ops:    .asciz "ops "
rate:   .asciz "rate "

        .data
last_sec: .byte 0xff
        .align 4
last_round: .long 0

        .bss
        .align 16
        .space 4096
stack_top:
