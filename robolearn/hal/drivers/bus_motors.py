"""Control tables of the serial-bus servos in SO-100/Koch class arms, and what their bus can carry.

Feetech STS3215 (SO-100/SO-101) speak Feetech's SCS protocol through `scservo_sdk` (pip: feetech-servo-sdk),
little-endian registers (protocol_end 0). Dynamixel X-series (XL330 on Koch arms, XL430/XM430) speak
Dynamixel protocol 2.0 through `dynamixel_sdk`. Addresses and units are the vendors' documented control tables.
Each arm cycle is one sync read of present position+velocity (adjacent registers) and one sync write of goal
positions; `max_command_hz` estimates how often that fits on the wire at a baud rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ControlTable:
    protocol: str
    sdk_module: str
    pip_name: str
    extra: str | None  # the robolearn extra that installs the SDK
    packet_protocol: float  # PacketHandler argument: 0 = SCS little-endian (STS), 2.0 = Dynamixel protocol 2.0
    operating_mode: int  # address, 1 byte
    torque_enable: int  # address, 1 byte
    goal_position: int  # address
    goal_bytes: int
    present_block: int  # address of one read returning velocity and position
    present_bytes: int
    position_at: int  # address of present position inside the block
    position_bytes: int
    velocity_at: int
    velocity_bytes: int
    velocity_signed: str  # "sign_magnitude" (Feetech, bit 15) or "twos_complement" (Dynamixel)
    velocity_rad_s_per_unit: float  # at 4096 ticks per turn
    position_modes: dict[int, tuple[int, int]]  # operating mode value -> goal position register range (ticks)
    packet_overhead: int  # bytes of framing in one instruction packet
    status_overhead: int  # bytes of framing in one status packet


FEETECH = ControlTable(
    protocol="feetech", sdk_module="scservo_sdk", pip_name="feetech-servo-sdk", extra="hardware", packet_protocol=0,
    operating_mode=33, torque_enable=40, goal_position=42, goal_bytes=2,
    present_block=56, present_bytes=4, position_at=56, position_bytes=2, velocity_at=58, velocity_bytes=2,
    velocity_signed="sign_magnitude", velocity_rad_s_per_unit=2 * math.pi / 4096,  # step/s
    position_modes={0: (0, 4095)},  # mode 0 = single-turn position servo
    packet_overhead=6, status_overhead=6,  # FF FF ID LEN INST/ERR ... CHK
)
DYNAMIXEL = ControlTable(
    protocol="dynamixel", sdk_module="dynamixel_sdk", pip_name="dynamixel-sdk", extra="hardware", packet_protocol=2.0,
    operating_mode=11, torque_enable=64, goal_position=116, goal_bytes=4,
    present_block=128, present_bytes=8, position_at=132, position_bytes=4, velocity_at=128, velocity_bytes=4,
    velocity_signed="twos_complement", velocity_rad_s_per_unit=0.229 * 2 * math.pi / 60,  # 0.229 rpm
    position_modes={3: (0, 4095), 4: (-1_048_575, 1_048_575), 5: (-1_048_575, 1_048_575)},  # position, extended, current-based
    packet_overhead=10, status_overhead=11,  # FF FF FD 00 ID LEN(2) INST [ERR] ... CRC(2)
)
TABLES = {"feetech": FEETECH, "dynamixel": DYNAMIXEL}

# model name -> (protocol, model numbers a ping may answer with)
MODELS: dict[str, tuple[str, frozenset[int]]] = {
    "sts3215": ("feetech", frozenset({777})),
    "xl330": ("dynamixel", frozenset({1190, 1200})),  # XL330-M077, XL330-M288
    "xl330-m077": ("dynamixel", frozenset({1190})),
    "xl330-m288": ("dynamixel", frozenset({1200})),
    "xl430": ("dynamixel", frozenset({1060})),  # XL430-W250
    "xm430": ("dynamixel", frozenset({1020})),  # XM430-W350
}


def decode_signed(raw: int, n_bytes: int, kind: str) -> int:
    bits = 8 * n_bytes
    if kind == "sign_magnitude":
        magnitude = raw & ((1 << (bits - 1)) - 1)
        return -magnitude if raw >> (bits - 1) & 1 else magnitude
    return raw - (1 << bits) if raw >> (bits - 1) & 1 else raw


def to_bytes(value: int, n_bytes: int) -> list[int]:
    """Little-endian register bytes of `value` (two's complement when negative), as GroupSyncWrite.addParam wants."""
    return list((value & ((1 << (8 * n_bytes)) - 1)).to_bytes(n_bytes, "little"))


def cycle_bytes(table: ControlTable, n_motors: int) -> int:
    """Bytes on the wire for one sync read of the present block plus one sync write of goals to `n_motors`."""
    addr_len = 2 if table.protocol == "feetech" else 4  # start address + data length fields
    read = table.packet_overhead + addr_len + n_motors + n_motors * (table.status_overhead + table.present_bytes)
    write = table.packet_overhead + addr_len + n_motors * (1 + table.goal_bytes)
    return read + write


def max_command_hz(table: ControlTable, n_motors: int, baudrate: int, utilization: float = 0.5) -> float:
    """Cycles per second that fit in `utilization` of the bus (10 bits per byte on a UART; the rest is margin for
    return delays, USB latency and retries)."""
    return utilization * baudrate / (10 * cycle_bytes(table, n_motors))
