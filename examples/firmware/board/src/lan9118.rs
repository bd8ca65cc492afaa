//! Interrupt-driven driver for the SMSC LAN9118 Ethernet controller of the mps2 boards, written
//! against the data sheet's register map as QEMU models it (`hw/net/lan9118.c`).
//!
//! The controller raises IRQ 13 on mps2-an385 when a frame's status enters the RX status FIFO
//! (RSFL, level 0) and, when enabled, when the TX data FIFO has room for a full frame again
//! (TDFA). The handler clears what it saw and wakes embassy-net's receive or transmit waker;
//! nothing polls the controller while the board is idle.
//!
//! QEMU 7.2 sends a frame as soon as its last word is written, so the TX FIFO never stays full
//! there and the TDFA path only matters on silicon (QEMU does not model FIFO level interrupts
//! other than RSFL).

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of the controller on mps2-an385/an386.
const BASE: usize = 0x4020_0000;

// Register offsets (32-bit registers).
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

// Indirect MAC registers, reached through MAC_CSR_CMD / MAC_CSR_DATA.
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;

const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR_FDPX: u32 = 1 << 20;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const HW_CFG_SRST: u32 = 1 << 0;
// IRQ_CFG: enable the IRQ pin, active high, push-pull (QEMU inverts the line otherwise).
const IRQ_CFG_EN: u32 = 1 << 8;
const IRQ_CFG_POL_HIGH: u32 = 1 << 4;
const IRQ_CFG_PUSH_PULL: u32 = 1 << 0;
// INT_STS / INT_EN: RX status FIFO level, TX data FIFO available.
const INT_RSFL: u32 = 1 << 3;
const INT_TDFA: u32 = 1 << 9;
/// FIFO_INT: TDFA once a full frame fits (in 64-byte units, bits 24-31); RSFL as soon as one
/// frame status waits (level 0, bits 0-7).
const FIFO_INT_LEVELS: u32 = ((MTU as u32 + 8).div_ceil(64)) << 24;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CMD_A_FIRST_SEG: u32 = 1 << 13;
const TX_CMD_A_LAST_SEG: u32 = 1 << 12;

/// Largest Ethernet frame without FCS, as embassy-net sees it.
pub const MTU: usize = 1514;
/// Frame buffer: MTU plus the 4 FCS bytes the controller appends on receive, word-rounded.
const BUF_LEN: usize = 1520;

/// The NIC's NVIC line on mps2-an385.
pub(crate) const IRQ: u16 = 13;

/// Woken from the interrupt handler when a frame has been received.
static RX_WAKER: AtomicWaker = AtomicWaker::new();
/// Woken from the interrupt handler when the TX FIFO has room again.
static TX_WAKER: AtomicWaker = AtomicWaker::new();

/// Errors found while bringing the controller up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// BYTE_TEST or ID_REV did not read as a LAN9118's: wrong machine or address.
    NotFound,
    /// A soft reset or MAC register access never completed.
    Timeout,
}

fn read(offset: usize) -> u32 {
    // SAFETY: BASE + offset is a 32-bit register of the LAN9118's MMIO window on this board;
    // volatile access is how device registers are read, and reads have no memory effects
    // beyond the device's own FIFO pops, which callers intend.
    unsafe { ptr::read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; the LAN9118 window is device memory that aliases no Rust object.
    unsafe { ptr::write_volatile((BASE + offset) as *mut u32, value) }
}

/// Frames waiting in the RX FIFO.
fn rx_frames_waiting() -> u32 {
    (read(RX_FIFO_INF) >> 16) & 0xFF
}

/// Interrupts the controller raised so far (what woke the core for the network).
pub fn interrupts() -> u32 {
    INTERRUPTS.load(Ordering::Relaxed)
}

/// Whether a received frame waits in the controller: a loop that polls by hand checks it
/// (with interrupts masked) before it sleeps.
pub fn frames_waiting() -> bool {
    rx_frames_waiting() != 0
}

/// Free bytes in the TX data FIFO.
fn tx_room() -> usize {
    (read(TX_FIFO_INF) & 0xFFFF) as usize
}

/// Interrupts taken so far: the tests check that the NIC really interrupts.
pub(crate) static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// The controller's interrupt (IRQ 13): acknowledges what is pending and wakes its waiter.
pub(crate) fn on_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    critical_section::with(|_| {
        let enabled = read(INT_EN);
        let pending = read(INT_STS) & enabled;
        // TDFA stays set while there is room: it is enabled only while a frame waits for room.
        if pending & INT_TDFA != 0 {
            write(INT_EN, enabled & !INT_TDFA);
        }
        // Write-one-to-clear; frames still in the FIFO are read by `receive`, which checks
        // the FIFO itself after registering its waker.
        write(INT_STS, pending);
        if pending & INT_RSFL != 0 {
            RX_WAKER.wake();
        }
        if pending & INT_TDFA != 0 {
            TX_WAKER.wake();
        }
    });
}

/// Sets or clears bits of INT_EN; the interrupt handler changes it too.
fn set_int_enabled(bits: u32, on: bool) {
    critical_section::with(|_| {
        let enabled = read(INT_EN);
        write(INT_EN, if on { enabled | bits } else { enabled & !bits });
    });
}

fn wait_mac_idle() -> Result<(), Error> {
    for _ in 0..10_000 {
        if read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

fn mac_read(reg: u32) -> Result<u32, Error> {
    wait_mac_idle()?;
    write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | reg);
    wait_mac_idle()?;
    Ok(read(MAC_CSR_DATA))
}

fn mac_write(reg: u32, value: u32) -> Result<(), Error> {
    wait_mac_idle()?;
    write(MAC_CSR_DATA, value);
    write(MAC_CSR_CMD, MAC_CSR_BUSY | reg);
    wait_mac_idle()
}

/// The LAN9118, owned by embassy-net once the stack is built.
pub struct Lan9118 {
    mac: [u8; 6],
    rx_buf: [u8; BUF_LEN],
    tx_buf: [u8; BUF_LEN],
}

impl Lan9118 {
    /// Resets the controller and enables transmit and receive, keeping the MAC address QEMU
    /// loaded from its EEPROM (`-net nic,macaddr=...`, by default 52:54:00:12:34:56).
    pub(crate) fn new() -> Result<Self, Error> {
        if read(BYTE_TEST) != 0x8765_4321 || read(ID_REV) >> 16 != 0x0118 {
            return Err(Error::NotFound);
        }
        write(HW_CFG, HW_CFG_SRST);
        let mut reset_done = false;
        for _ in 0..10_000 {
            if read(HW_CFG) & HW_CFG_SRST == 0 {
                reset_done = true;
                break;
            }
        }
        if !reset_done {
            return Err(Error::Timeout);
        }
        let low = mac_read(MAC_ADDRL)?.to_le_bytes();
        let high = mac_read(MAC_ADDRH)?.to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        // After reset the MAC is promiscuous; filter on our address, full duplex.
        mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX)?;
        write(TX_CFG, TX_CFG_TX_ON);
        // Interrupts: the receive level one now, the TX room one on demand (see `transmit`).
        write(FIFO_INT, FIFO_INT_LEVELS);
        write(INT_STS, u32::MAX);
        write(IRQ_CFG, IRQ_CFG_EN | IRQ_CFG_POL_HIGH | IRQ_CFG_PUSH_PULL);
        write(INT_EN, INT_RSFL);
        Ok(Self {
            mac,
            rx_buf: [0; BUF_LEN],
            tx_buf: [0; BUF_LEN],
        })
    }

    /// The controller's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Pops one frame from the RX FIFO into `rx_buf`; returns its length without FCS,
    /// or `None` (frame dropped) if it does not fit.
    fn pop_frame(&mut self) -> Option<usize> {
        let status = read(RX_STATUS_FIFO);
        let len_with_fcs = ((status >> 16) & 0x3FFF) as usize;
        let words = len_with_fcs.div_ceil(4);
        // The whole frame must leave the FIFO even if we drop it, or the next one is garbled.
        let fits = (4..=BUF_LEN).contains(&len_with_fcs);
        for i in 0..words {
            let word = read(RX_DATA_FIFO).to_le_bytes();
            if fits {
                let start = i * 4;
                let end = (start + 4).min(len_with_fcs);
                self.rx_buf[start..end].copy_from_slice(&word[..end - start]);
            }
        }
        fits.then(|| len_with_fcs - 4)
    }
}

/// A received frame, already copied out of the FIFO.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

/// Room to build one frame, pushed to the TX FIFO on `consume`.
pub struct TxToken<'a> {
    buf: &'a mut [u8; BUF_LEN],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let result = f(&mut self.buf[..len]);
        let len_field = len as u32;
        write(
            TX_DATA_FIFO,
            TX_CMD_A_FIRST_SEG | TX_CMD_A_LAST_SEG | len_field,
        );
        // Command B: packet tag (unused, 0) and length again.
        write(TX_DATA_FIFO, len_field);
        for chunk in self.buf[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        // Drain the status so the TX status FIFO never fills; errors are not recoverable here
        // and TCP retransmits anyway.
        let _ = read(TX_STATUS_FIFO);
        result
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Register before checking, so a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        loop {
            if rx_frames_waiting() == 0 {
                return None;
            }
            if let Some(len) = self.pop_frame() {
                return Some((
                    RxToken {
                        frame: &mut self.rx_buf[..len],
                    },
                    TxToken {
                        buf: &mut self.tx_buf,
                    },
                ));
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<TxToken<'_>> {
        // A frame needs two command words besides its data.
        if tx_room() < MTU + 8 {
            // Register, then ask for TDFA, then look again: room that appeared in between is
            // either seen here or raises the interrupt.
            TX_WAKER.register(cx.waker());
            set_int_enabled(INT_TDFA, true);
            if tx_room() < MTU + 8 {
                return None;
            }
            set_int_enabled(INT_TDFA, false);
        }
        Some(TxToken {
            buf: &mut self.tx_buf,
        })
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        // QEMU's PHY link is always up unless the monitor sets it down; tests never do.
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
