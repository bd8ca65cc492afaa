//! Polled driver for the SMSC LAN9118 Ethernet controller of the mps2 boards, written against
//! the data sheet's register map as QEMU models it (`hw/net/lan9118.c`).
//!
//! No NIC interrupt is used: the SysTick handler calls [`on_tick`], which wakes embassy-net
//! when received frames are waiting. That costs at most 1 ms of latency per idle wake-up and
//! keeps the driver free of interrupt set-up.

use core::ptr;
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
const BYTE_TEST: usize = 0x64;
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
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CMD_A_FIRST_SEG: u32 = 1 << 13;
const TX_CMD_A_LAST_SEG: u32 = 1 << 12;

/// Largest Ethernet frame without FCS, as embassy-net sees it.
pub const MTU: usize = 1514;
/// Frame buffer: MTU plus the 4 FCS bytes the controller appends on receive, word-rounded.
const BUF_LEN: usize = 1520;

/// Woken from the SysTick handler when frames wait in the RX FIFO.
static RX_WAKER: AtomicWaker = AtomicWaker::new();

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

/// Called once per millisecond from the SysTick handler.
pub(crate) fn on_tick() {
    if rx_frames_waiting() != 0 {
        RX_WAKER.wake();
    }
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
        // Free TX data FIFO bytes; a frame needs two command words besides its data.
        if (read(TX_FIFO_INF) & 0xFFFF) as usize >= MTU + 8 {
            Some(TxToken {
                buf: &mut self.tx_buf,
            })
        } else {
            // QEMU sends synchronously, so this is only for real silicon: try again soon.
            cx.waker().wake_by_ref();
            None
        }
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
