//! A data-only pickle decoder and a pickle writer, written for depot.
//!
//! The decoder runs the pickle machine over inert [`Node`]s in caller storage: it never imports,
//! calls or instantiates anything. A global is a pair of names, `REDUCE`/`NEWOBJ`/`BUILD` keep
//! their operands as a tree, so an object depot cannot map is still kept whole and can be
//! written back unchanged. Every resource is bounded by the storage handed in ([`Scratch`]):
//! nodes, stack and memo entries; a pickle that needs more is refused with a typed error.
//! Strings and byte strings are [`Span`]s into the input, never copied.
//!
//! The writer emits protocol 4 opcodes without `FRAME` or memo (and `BYTEARRAY8` when it
//! writes back a protocol 5 bytearray), which every Python from 3.8 reads.
//!
//! Sizes: a [`Node`] is 24 bytes; a request of a few small values takes some tens of nodes,
//! and an item about two nodes per value in it (one for the value, one to link it into its
//! container).

/// A range of the input pickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Span {
    /// Offset of the first byte.
    pub at: u32,
    /// Bytes.
    pub len: u32,
}

impl Span {
    /// The bytes of this span in `input` (empty if out of range, which a decoded span never is).
    pub fn of(self, input: &[u8]) -> &[u8] {
        let end = self.at as usize + self.len as usize;
        input.get(self.at as usize..end).unwrap_or(&[])
    }
}

/// A sequence of cells (see [`Node::Cell`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Seq {
    /// The first cell, [`NIL`] when empty.
    pub first: u32,
    /// The last cell, [`NIL`] when empty.
    pub last: u32,
    /// Cells (items; for a dict, keys and values alternate).
    pub len: u32,
}

impl Seq {
    const EMPTY: Seq = Seq {
        first: NIL,
        last: NIL,
        len: 0,
    };
}

/// No node.
pub const NIL: u32 = u32::MAX;

/// One inert value of a decoded pickle. Children are node indices.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Node {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits `i64`.
    Int(i64),
    /// A larger int: its little-endian two's-complement bytes.
    Long(Span),
    /// A float.
    Float(f64),
    /// A str, as the UTF-8 bytes Python wrote (lone surrogates included, as `surrogatepass`).
    Str(Span),
    /// A bytes object.
    Bytes(Span),
    /// A bytearray written with `BYTEARRAY8` (protocol 5).
    ByteArray(Span),
    /// A tuple.
    Tuple(Seq),
    /// A list.
    List(Seq),
    /// A dict: keys and values alternate.
    Dict(Seq),
    /// A set.
    Set(Seq),
    /// A frozenset.
    FrozenSet(Seq),
    /// A reference to a module attribute, not resolved.
    Global {
        /// The module name.
        module: Span,
        /// The attribute name.
        name: Span,
    },
    /// `func(*args)`, not called; `state` is what a later `BUILD` gave it ([`NIL`] if none).
    Reduce {
        /// The callable node.
        func: u32,
        /// The argument tuple node.
        args: u32,
        /// The `BUILD` state.
        state: u32,
    },
    /// `cls.__new__(cls, *args, **kwargs)`, not run; `kwargs` is [`NIL`] for `NEWOBJ`.
    NewObj {
        /// The class node.
        cls: u32,
        /// The argument tuple node.
        args: u32,
        /// The keyword dict node (`NEWOBJ_EX`).
        kwargs: u32,
        /// The `BUILD` state.
        state: u32,
    },
    /// A link in a sequence: an item and the next cell.
    Cell {
        /// The item node.
        item: u32,
        /// The next cell, [`NIL`] at the end.
        next: u32,
    },
}

/// Why a pickle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PickleError {
    /// The input ended before `STOP`.
    Truncated,
    /// Bytes follow `STOP`.
    TrailingBytes,
    /// An opcode depot does not decode (text protocols, persistent ids, extensions, buffers).
    UnsupportedOpcode(u8),
    /// The stack, marks or memo are not as the opcode needs.
    Malformed,
    /// A memo index that was never stored.
    BadMemo,
    /// More nodes than the scratch storage holds.
    TooManyNodes,
    /// A deeper stack than the scratch storage holds.
    StackFull,
    /// A memo index beyond the scratch storage.
    MemoFull,
    /// The input is longer than spans can address.
    TooLong,
}

/// Caller storage for one decode: nodes, the stack (marks included) and the memo.
pub struct Scratch<'s> {
    /// Node arena.
    pub nodes: &'s mut [Node],
    /// The machine's stack.
    pub stack: &'s mut [u32],
    /// Memo slots.
    pub memo: &'s mut [u32],
}

/// [`Scratch`] storage kept for the life of its user: lent slices (firmware) or, with the
/// `alloc` feature, owned `Vec`s (hosts). [`ScratchStore::scratch`] lends it for one call.
pub struct ScratchStore<'s> {
    /// Node arena.
    pub nodes: crate::storage::Managed<'s, Node>,
    /// The machine's stack.
    pub stack: crate::storage::Managed<'s, u32>,
    /// Memo slots.
    pub memo: crate::storage::Managed<'s, u32>,
}

impl ScratchStore<'_> {
    /// The storage as a [`Scratch`] for one decode or write.
    pub fn scratch(&mut self) -> Scratch<'_> {
        Scratch {
            nodes: &mut self.nodes,
            stack: &mut self.stack,
            memo: &mut self.memo,
        }
    }
}

/// Owned [`Scratch`] storage of fixed size, for statics and tests.
pub struct ScratchBuf<const NODES: usize, const STACK: usize, const MEMO: usize> {
    nodes: [Node; NODES],
    stack: [u32; STACK],
    memo: [u32; MEMO],
}

impl<const NODES: usize, const STACK: usize, const MEMO: usize> Default
    for ScratchBuf<NODES, STACK, MEMO>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const NODES: usize, const STACK: usize, const MEMO: usize> ScratchBuf<NODES, STACK, MEMO> {
    /// Zeroed storage.
    pub const fn new() -> Self {
        ScratchBuf {
            nodes: [Node::None; NODES],
            stack: [0; STACK],
            memo: [0; MEMO],
        }
    }

    /// The storage as a [`Scratch`].
    pub fn scratch(&mut self) -> Scratch<'_> {
        Scratch {
            nodes: &mut self.nodes,
            stack: &mut self.stack,
            memo: &mut self.memo,
        }
    }
}

/// Marks sit on the stack as this value (a node index never reaches it).
const MARK: u32 = u32::MAX - 1;

/// A decoded pickle: the input and the nodes built from it.
#[derive(Clone, Copy)]
pub struct Pickle<'p> {
    /// The pickle bytes.
    pub input: &'p [u8],
    /// The nodes.
    pub nodes: &'p [Node],
    /// The value `STOP` returned.
    pub root: u32,
}

impl<'p> Pickle<'p> {
    /// The node at `i` (`None` for [`NIL`] or out of range).
    pub fn node(&self, i: u32) -> Option<Node> {
        self.nodes.get(i as usize).copied()
    }

    /// The bytes of a span.
    pub fn bytes(&self, span: Span) -> &'p [u8] {
        span.of(self.input)
    }

    /// The items of a sequence, in order.
    pub fn items(&self, seq: Seq) -> Items<'p> {
        Items {
            nodes: self.nodes,
            cell: seq.first,
            left: seq.len,
        }
    }

    /// The str at `i`, if it is one and valid UTF-8.
    pub fn str(&self, i: u32) -> Option<&'p str> {
        match self.node(i)? {
            Node::Str(s) => core::str::from_utf8(self.bytes(s)).ok(),
            _ => None,
        }
    }

    /// The items of the tuple at `i`, if it is one.
    pub fn tuple(&self, i: u32) -> Option<Items<'p>> {
        match self.node(i)? {
            Node::Tuple(seq) => Some(self.items(seq)),
            _ => None,
        }
    }
}

/// Iterator over the items of a [`Seq`].
#[derive(Clone)]
pub struct Items<'p> {
    nodes: &'p [Node],
    cell: u32,
    left: u32,
}

impl Iterator for Items<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        let Some(Node::Cell { item, next }) = self.nodes.get(self.cell as usize).copied() else {
            return None;
        };
        self.left -= 1;
        self.cell = next;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Items<'_> {}

struct Machine<'s, 'i> {
    input: &'i [u8],
    pos: usize,
    nodes: &'s mut [Node],
    n_nodes: usize,
    stack: &'s mut [u32],
    sp: usize,
    memo: &'s mut [u32],
    /// Memo slots below this are meaningful (others may hold stale values).
    memo_len: usize,
}

/// Decodes one pickle that fills `input` exactly, into `scratch`.
pub fn decode<'p>(
    input: &'p [u8],
    scratch: &'p mut Scratch<'_>,
) -> Result<Pickle<'p>, PickleError> {
    if input.len() >= u32::MAX as usize {
        return Err(PickleError::TooLong);
    }
    let mut m = Machine {
        input,
        pos: 0,
        nodes: scratch.nodes,
        n_nodes: 0,
        stack: scratch.stack,
        sp: 0,
        memo: scratch.memo,
        memo_len: 0,
    };
    let root = m.run()?;
    if m.pos != input.len() {
        return Err(PickleError::TrailingBytes);
    }
    let n = m.n_nodes;
    Ok(Pickle {
        input,
        nodes: &m.nodes[..n],
        root,
    })
}

impl Machine<'_, '_> {
    fn take(&mut self, n: usize) -> Result<Span, PickleError> {
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated)?;
        if end > self.input.len() {
            return Err(PickleError::Truncated);
        }
        let span = Span {
            at: self.pos as u32,
            len: n as u32,
        };
        self.pos = end;
        Ok(span)
    }

    fn arg<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let span = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(span.of(self.input));
        Ok(out)
    }

    fn u8(&mut self) -> Result<usize, PickleError> {
        Ok(self.arg::<1>()?[0] as usize)
    }

    fn u32(&mut self) -> Result<usize, PickleError> {
        Ok(u32::from_le_bytes(self.arg()?) as usize)
    }

    fn u64(&mut self) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.arg()?);
        // Longer than the input can hold is truncated, whatever `usize` is.
        usize::try_from(n).map_err(|_| PickleError::Truncated)
    }

    fn alloc(&mut self, node: Node) -> Result<u32, PickleError> {
        let i = self.n_nodes;
        let slot = self.nodes.get_mut(i).ok_or(PickleError::TooManyNodes)?;
        *slot = node;
        self.n_nodes += 1;
        Ok(i as u32)
    }

    fn push(&mut self, v: u32) -> Result<(), PickleError> {
        let slot = self.stack.get_mut(self.sp).ok_or(PickleError::StackFull)?;
        *slot = v;
        self.sp += 1;
        Ok(())
    }

    fn push_new(&mut self, node: Node) -> Result<(), PickleError> {
        let i = self.alloc(node)?;
        self.push(i)
    }

    /// Pops a value (not a mark).
    fn pop(&mut self) -> Result<u32, PickleError> {
        let v = self.top()?;
        self.sp -= 1;
        Ok(v)
    }

    fn top(&self) -> Result<u32, PickleError> {
        match self.sp.checked_sub(1).map(|i| self.stack[i]) {
            Some(v) if v != MARK => Ok(v),
            _ => Err(PickleError::Malformed),
        }
    }

    /// The stack index just above the topmost mark.
    fn mark_base(&self) -> Result<usize, PickleError> {
        self.stack[..self.sp]
            .iter()
            .rposition(|&v| v == MARK)
            .map(|i| i + 1)
            .ok_or(PickleError::Malformed)
    }

    /// Cells for `stack[from..sp]`, appended to `seq`.
    fn extend(&mut self, mut seq: Seq, from: usize) -> Result<Seq, PickleError> {
        for k in from..self.sp {
            let item = self.stack[k];
            let cell = self.alloc(Node::Cell { item, next: NIL })?;
            if seq.last == NIL {
                seq.first = cell;
            } else if let Some(Node::Cell { next, .. }) = self.nodes.get_mut(seq.last as usize) {
                *next = cell;
            }
            seq.last = cell;
            seq.len += 1;
        }
        Ok(seq)
    }

    /// Pops to the topmost mark (and the mark) into a new sequence.
    fn pop_mark_seq(&mut self) -> Result<Seq, PickleError> {
        let base = self.mark_base()?;
        let seq = self.extend(Seq::EMPTY, base)?;
        self.sp = base - 1;
        Ok(seq)
    }

    /// Pops the top `n` values into a new sequence.
    fn pop_n_seq(&mut self, n: usize) -> Result<Seq, PickleError> {
        let base = self.sp.checked_sub(n).ok_or(PickleError::Malformed)?;
        if self.stack[base..self.sp].contains(&MARK) {
            return Err(PickleError::Malformed);
        }
        let seq = self.extend(Seq::EMPTY, base)?;
        self.sp = base;
        Ok(seq)
    }

    /// Appends `stack[from..sp]` to the container node at stack index `at`, then drops them.
    fn add_to(&mut self, at: usize, from: usize, pairs: bool) -> Result<(), PickleError> {
        if pairs && !(self.sp - from).is_multiple_of(2) {
            return Err(PickleError::Malformed);
        }
        let target = self.stack[at];
        if target == MARK {
            return Err(PickleError::Malformed);
        }
        let seq = match (self.nodes[target as usize], pairs) {
            (Node::List(s), false) | (Node::Set(s), false) | (Node::Dict(s), true) => s,
            _ => return Err(PickleError::Malformed),
        };
        let seq = self.extend(seq, from)?;
        match &mut self.nodes[target as usize] {
            Node::List(s) | Node::Set(s) | Node::Dict(s) => *s = seq,
            _ => return Err(PickleError::Malformed),
        }
        self.sp = from;
        Ok(())
    }

    fn memo_put(&mut self, index: usize) -> Result<(), PickleError> {
        let v = self.top()?;
        let slot = self.memo.get_mut(index).ok_or(PickleError::MemoFull)?;
        *slot = v;
        if index >= self.memo_len {
            // Slots skipped over hold no value.
            for s in &mut self.memo[self.memo_len..index] {
                *s = NIL;
            }
            self.memo_len = index + 1;
        }
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<(), PickleError> {
        match self.memo[..self.memo_len].get(index) {
            Some(&v) if v != NIL => self.push(v),
            _ => Err(PickleError::BadMemo),
        }
    }

    fn int_node(&mut self, span: Span) -> Result<(), PickleError> {
        let bytes = span.of(self.input);
        let node = if bytes.len() <= 8 {
            let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut le = [fill; 8];
            le[..bytes.len()].copy_from_slice(bytes);
            Node::Int(i64::from_le_bytes(le))
        } else {
            Node::Long(span)
        };
        self.push_new(node)
    }

    fn run(&mut self) -> Result<u32, PickleError> {
        loop {
            let op = self.u8()? as u8;
            match op {
                0x80 => {
                    // PROTO: any version up to 5.
                    if self.u8()? > 5 {
                        return Err(PickleError::Malformed);
                    }
                }
                0x95 => {
                    // FRAME: a size hint, nothing to build.
                    self.u64()?;
                }
                b'.' => {
                    let v = self.pop()?;
                    if self.sp != 0 {
                        return Err(PickleError::Malformed);
                    }
                    return Ok(v);
                }
                b'(' => self.push(MARK)?,
                b'0' => {
                    // POP (a mark too, as Python allows).
                    if self.sp == 0 {
                        return Err(PickleError::Malformed);
                    }
                    self.sp -= 1;
                }
                b'1' => {
                    // POP_MARK
                    self.sp = self.mark_base()? - 1;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                b'N' => self.push_new(Node::None)?,
                0x88 => self.push_new(Node::Bool(true))?,
                0x89 => self.push_new(Node::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.arg()?);
                    self.push_new(Node::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_new(Node::Int(v as i64))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arg()?);
                    self.push_new(Node::Int(v.into()))?;
                }
                0x8a => {
                    let n = self.u8()?;
                    let span = self.take(n)?;
                    self.int_node(span)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arg()?);
                    let n = usize::try_from(n).map_err(|_| PickleError::Malformed)?;
                    let span = self.take(n)?;
                    self.int_node(span)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arg()?);
                    self.push_new(Node::Float(v))?;
                }
                0x8c | b'X' | 0x8d | b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        0x8c | b'C' => self.u8()?,
                        b'X' | b'B' => self.u32()?,
                        _ => self.u64()?,
                    };
                    let span = self.take(n)?;
                    self.push_new(match op {
                        0x8c | b'X' | 0x8d => Node::Str(span),
                        0x96 => Node::ByteArray(span),
                        _ => Node::Bytes(span),
                    })?;
                }
                b')' => self.push_new(Node::Tuple(Seq::EMPTY))?,
                b't' => {
                    let seq = self.pop_mark_seq()?;
                    self.push_new(Node::Tuple(seq))?;
                }
                0x85..=0x87 => {
                    let seq = self.pop_n_seq((op - 0x84) as usize)?;
                    self.push_new(Node::Tuple(seq))?;
                }
                b']' => self.push_new(Node::List(Seq::EMPTY))?,
                b'l' => {
                    let seq = self.pop_mark_seq()?;
                    self.push_new(Node::List(seq))?;
                }
                b'a' => {
                    let at = self.sp.checked_sub(2).ok_or(PickleError::Malformed)?;
                    self.top()?;
                    self.add_to(at, at + 1, false)?;
                }
                b'e' | 0x90 => {
                    let base = self.mark_base()?;
                    let at = base.checked_sub(2).ok_or(PickleError::Malformed)?;
                    // Drop the mark by shifting the items down over it.
                    self.stack.copy_within(base..self.sp, base - 1);
                    self.sp -= 1;
                    let set = op == 0x90;
                    if set != matches!(self.nodes.get(self.stack[at] as usize), Some(Node::Set(_)))
                    {
                        return Err(PickleError::Malformed);
                    }
                    self.add_to(at, base - 1, false)?;
                }
                b'}' => self.push_new(Node::Dict(Seq::EMPTY))?,
                b'd' => {
                    let seq = self.pop_mark_seq()?;
                    if !seq.len.is_multiple_of(2) {
                        return Err(PickleError::Malformed);
                    }
                    self.push_new(Node::Dict(seq))?;
                }
                b's' => {
                    let at = self.sp.checked_sub(3).ok_or(PickleError::Malformed)?;
                    if self.stack[at + 1..self.sp].contains(&MARK) {
                        return Err(PickleError::Malformed);
                    }
                    self.add_to(at, at + 1, true)?;
                }
                b'u' => {
                    let base = self.mark_base()?;
                    let at = base.checked_sub(2).ok_or(PickleError::Malformed)?;
                    self.stack.copy_within(base..self.sp, base - 1);
                    self.sp -= 1;
                    self.add_to(at, base - 1, true)?;
                }
                0x8f => self.push_new(Node::Set(Seq::EMPTY))?,
                0x91 => {
                    let seq = self.pop_mark_seq()?;
                    self.push_new(Node::FrozenSet(seq))?;
                }
                0x94 => {
                    let index = self.memo_len;
                    self.memo_put(index)?;
                }
                b'q' => {
                    let index = self.u8()?;
                    self.memo_put(index)?;
                }
                b'r' => {
                    let index = self.u32()?;
                    self.memo_put(index)?;
                }
                b'h' => {
                    let index = self.u8()?;
                    self.memo_get(index)?;
                }
                b'j' => {
                    let index = self.u32()?;
                    self.memo_get(index)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_new(Node::Global { module, name })?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.nodes[module as usize], self.nodes[name as usize]) {
                        (Node::Str(module), Node::Str(name)) => {
                            self.push_new(Node::Global { module, name })?
                        }
                        _ => return Err(PickleError::Malformed),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    if !matches!(self.nodes[args as usize], Node::Tuple(_)) {
                        return Err(PickleError::Malformed);
                    }
                    self.push_new(if op == b'R' {
                        Node::Reduce {
                            func,
                            args,
                            state: NIL,
                        }
                    } else {
                        Node::NewObj {
                            cls: func,
                            args,
                            kwargs: NIL,
                            state: NIL,
                        }
                    })?;
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    match (self.nodes[args as usize], self.nodes[kwargs as usize]) {
                        (Node::Tuple(_), Node::Dict(_)) => self.push_new(Node::NewObj {
                            cls,
                            args,
                            kwargs,
                            state: NIL,
                        })?,
                        _ => return Err(PickleError::Malformed),
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    match &mut self.nodes[obj as usize] {
                        Node::Reduce { state: s, .. } | Node::NewObj { state: s, .. }
                            if *s == NIL =>
                        {
                            *s = state
                        }
                        _ => return Err(PickleError::Malformed),
                    }
                }
                other => return Err(PickleError::UnsupportedOpcode(other)),
            }
        }
    }

    /// A newline-terminated argument (`GLOBAL`), without the newline.
    fn line(&mut self) -> Result<Span, PickleError> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated)?;
        let span = self.take(n)?;
        self.pos += 1;
        Ok(span)
    }
}

/// Writes pickle opcodes into a slice; running out of room is remembered and reported by
/// [`Writer::finish`], so callers write straight through.
pub struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
    overflow: bool,
}

/// The output did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoRoom;

impl<'o> Writer<'o> {
    /// A writer at the start of `out`.
    pub fn new(out: &'o mut [u8]) -> Self {
        Writer {
            out,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written, or [`NoRoom`] if any write did not fit.
    pub fn finish(self) -> Result<usize, NoRoom> {
        if self.overflow {
            Err(NoRoom)
        } else {
            Ok(self.len)
        }
    }

    /// Forgets what was written after the first `len` bytes (and a lack of room there).
    pub fn rewind(&mut self, len: usize) {
        if len <= self.len {
            self.len = len;
            self.overflow = false;
        }
    }

    /// Raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        match self.out.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
        self
    }

    fn op(&mut self, op: u8) -> &mut Self {
        self.raw(&[op])
    }

    /// `PROTO 4`.
    pub fn proto(&mut self) -> &mut Self {
        self.raw(&[0x80, 4])
    }

    /// `STOP`.
    pub fn stop(&mut self) -> &mut Self {
        self.op(b'.')
    }

    /// `MARK`.
    pub fn mark(&mut self) -> &mut Self {
        self.op(b'(')
    }

    /// `None`.
    pub fn none(&mut self) -> &mut Self {
        self.op(b'N')
    }

    /// A bool.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.op(if v { 0x88 } else { 0x89 })
    }

    /// An int, in the shortest form.
    pub fn int(&mut self, v: i128) -> &mut Self {
        if (0..=0xff).contains(&v) {
            self.raw(&[b'K', v as u8])
        } else if (0..=0xffff).contains(&v) {
            self.op(b'M').raw(&(v as u16).to_le_bytes())
        } else if i32::try_from(v).is_ok() && v >= 0 {
            self.op(b'J').raw(&(v as i32).to_le_bytes())
        } else {
            // LONG1 with the fewest two's-complement bytes (3 for small negatives).
            let bytes = v.to_le_bytes();
            let mut n = 16;
            while n > 1 {
                let top = bytes[n - 1];
                let below = bytes[n - 2];
                let redundant =
                    (top == 0 && below & 0x80 == 0) || (top == 0xff && below & 0x80 != 0);
                if !redundant {
                    break;
                }
                n -= 1;
            }
            self.raw(&[0x8a, n as u8]).raw(&bytes[..n])
        }
    }

    /// An int from its little-endian two's-complement bytes.
    pub fn long_bytes(&mut self, le: &[u8]) -> &mut Self {
        if le.len() <= 0xff {
            self.raw(&[0x8a, le.len() as u8])
        } else {
            self.op(0x8b).raw(&(le.len() as u32).to_le_bytes())
        }
        .raw(le)
    }

    /// A float.
    pub fn float(&mut self, v: f64) -> &mut Self {
        self.op(b'G').raw(&v.to_be_bytes())
    }

    fn sized(&mut self, short: u8, long: u8, huge: u8, bytes: &[u8]) -> &mut Self {
        if bytes.len() <= 0xff {
            self.raw(&[short, bytes.len() as u8])
        } else if bytes.len() <= u32::MAX as usize {
            self.op(long).raw(&(bytes.len() as u32).to_le_bytes())
        } else {
            self.op(huge).raw(&(bytes.len() as u64).to_le_bytes())
        }
        .raw(bytes)
    }

    /// A str from UTF-8 bytes (written as they are).
    pub fn str(&mut self, utf8: &[u8]) -> &mut Self {
        self.sized(0x8c, b'X', 0x8d, utf8)
    }

    /// Length header of a str of `len` bytes; the caller writes the bytes next.
    pub fn str_header(&mut self, len: usize) -> &mut Self {
        if len <= 0xff {
            self.raw(&[0x8c, len as u8])
        } else if len <= u32::MAX as usize {
            self.op(b'X').raw(&(len as u32).to_le_bytes())
        } else {
            self.op(0x8d).raw(&(len as u64).to_le_bytes())
        }
    }

    /// Length header of a bytes object of `len` bytes; the caller writes the bytes next.
    pub fn bytes_header(&mut self, len: usize) -> &mut Self {
        if len <= 0xff {
            self.raw(&[b'C', len as u8])
        } else if len <= u32::MAX as usize {
            self.op(b'B').raw(&(len as u32).to_le_bytes())
        } else {
            self.op(0x8e).raw(&(len as u64).to_le_bytes())
        }
    }

    /// A bytes object.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.bytes_header(v.len()).raw(v)
    }

    /// A bytearray, the protocol 4 way (`builtins.bytearray(bytes)`), which every Python reads.
    pub fn bytearray(&mut self, v: &[u8]) -> &mut Self {
        self.global(b"builtins", b"bytearray")
            .bytes(v)
            .op(0x85)
            .op(b'R')
    }

    /// A global by module and name (`STACK_GLOBAL`).
    pub fn global(&mut self, module: &[u8], name: &[u8]) -> &mut Self {
        self.str(module).str(name).op(0x93)
    }

    /// A tuple of the `n` values written since the matching [`Writer::mark`] (`n` picks the
    /// shortest form: the caller writes a mark only when `n > 3`).
    pub fn tuple(&mut self, n: usize) -> &mut Self {
        match n {
            0 => self.op(b')'),
            1..=3 => self.op(0x84 + n as u8),
            _ => self.op(b't'),
        }
    }

    /// `TUPLE`: a tuple of everything since the last [`Writer::mark`].
    pub fn tuple_from_mark(&mut self) -> &mut Self {
        self.op(b't')
    }

    /// `EMPTY_LIST`.
    pub fn empty_list(&mut self) -> &mut Self {
        self.op(b']')
    }

    /// `APPENDS` (after a mark and the items).
    pub fn appends(&mut self) -> &mut Self {
        self.op(b'e')
    }

    /// `EMPTY_DICT`.
    pub fn empty_dict(&mut self) -> &mut Self {
        self.op(b'}')
    }

    /// `SETITEMS` (after a mark and the pairs).
    pub fn setitems(&mut self) -> &mut Self {
        self.op(b'u')
    }

    /// `EMPTY_SET`.
    pub fn empty_set(&mut self) -> &mut Self {
        self.op(0x8f)
    }

    /// `ADDITEMS` (after a mark and the items).
    pub fn additems(&mut self) -> &mut Self {
        self.op(0x90)
    }

    /// `FROZENSET` (after a mark and the items).
    pub fn frozenset(&mut self) -> &mut Self {
        self.op(0x91)
    }

    /// `REDUCE`.
    pub fn reduce(&mut self) -> &mut Self {
        self.op(b'R')
    }

    /// `NEWOBJ`.
    pub fn newobj(&mut self) -> &mut Self {
        self.op(0x81)
    }

    /// `NEWOBJ_EX`.
    pub fn newobj_ex(&mut self) -> &mut Self {
        self.op(0x92)
    }

    /// `BUILD`.
    pub fn build(&mut self) -> &mut Self {
        self.op(b'b')
    }

    /// An exception instance `module.name(message)` (`message` `None`: no arguments).
    pub fn exception(&mut self, module: &[u8], name: &[u8], message: Option<&[u8]>) -> &mut Self {
        self.global(module, name);
        match message {
            Some(m) => self.str(m).tuple(1),
            None => self.tuple(0),
        }
        .reduce()
    }
}

/// Why a subtree could not be written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WriteError {
    /// The output is full.
    NoRoom,
    /// Nested deeper than [`MAX_DEPTH`], or self-referential.
    TooDeep,
    /// Shared references would expand past the work budget.
    TooMuchWork,
}

/// How deep a value may nest (containers and objects) when depot walks it.
pub const MAX_DEPTH: u32 = 32;

/// Writes the subtree at `root` of `p` as pickle opcodes (no memo: shared values are copied;
/// cycles hit [`MAX_DEPTH`]). `budget` bounds the nodes visited.
pub fn write_node(
    w: &mut Writer<'_>,
    p: &Pickle<'_>,
    root: u32,
    depth: u32,
    budget: &mut u32,
) -> Result<(), WriteError> {
    if depth > MAX_DEPTH {
        return Err(WriteError::TooDeep);
    }
    *budget = budget.checked_sub(1).ok_or(WriteError::TooMuchWork)?;
    let Some(node) = p.node(root) else {
        return Err(WriteError::TooDeep);
    };
    let d = depth + 1;
    match node {
        Node::None => {
            w.none();
        }
        Node::Bool(v) => {
            w.bool(v);
        }
        Node::Int(v) => {
            w.int(v.into());
        }
        Node::Long(s) => {
            w.long_bytes(p.bytes(s));
        }
        Node::Float(v) => {
            w.float(v);
        }
        Node::Str(s) => {
            w.str(p.bytes(s));
        }
        Node::Bytes(s) => {
            w.bytes(p.bytes(s));
        }
        Node::ByteArray(s) => {
            w.raw(&[0x96])
                .raw(&(s.len as u64).to_le_bytes())
                .raw(p.bytes(s));
        }
        Node::Tuple(seq) => {
            if seq.len > 3 {
                w.mark();
            }
            for item in p.items(seq) {
                write_node(w, p, item, d, budget)?;
            }
            w.tuple(seq.len as usize);
        }
        Node::List(seq) | Node::Dict(seq) | Node::Set(seq) => {
            match node {
                Node::List(_) => w.empty_list(),
                Node::Dict(_) => w.empty_dict(),
                _ => w.empty_set(),
            };
            if seq.len > 0 {
                w.mark();
                for item in p.items(seq) {
                    write_node(w, p, item, d, budget)?;
                }
                match node {
                    Node::List(_) => w.appends(),
                    Node::Dict(_) => w.setitems(),
                    _ => w.additems(),
                };
            }
        }
        Node::FrozenSet(seq) => {
            w.mark();
            for item in p.items(seq) {
                write_node(w, p, item, d, budget)?;
            }
            w.frozenset();
        }
        Node::Global { module, name } => {
            w.global(p.bytes(module), p.bytes(name));
        }
        Node::Reduce { func, args, state } => {
            write_node(w, p, func, d, budget)?;
            write_node(w, p, args, d, budget)?;
            w.reduce();
            if state != NIL {
                write_node(w, p, state, d, budget)?;
                w.build();
            }
        }
        Node::NewObj {
            cls,
            args,
            kwargs,
            state,
        } => {
            write_node(w, p, cls, d, budget)?;
            write_node(w, p, args, d, budget)?;
            if kwargs == NIL {
                w.newobj();
            } else {
                write_node(w, p, kwargs, d, budget)?;
                w.newobj_ex();
            }
            if state != NIL {
                write_node(w, p, state, d, budget)?;
                w.build();
            }
        }
        Node::Cell { .. } => return Err(WriteError::TooDeep),
    }
    if w.overflow {
        return Err(WriteError::NoRoom);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_size_as_documented() {
        assert_eq!(core::mem::size_of::<Node>(), 24);
    }
}
