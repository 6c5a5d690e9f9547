//! A JPEG decoder whose pixels equal libjpeg-turbo's defaults (what `cv2.imread` uses).
//!
//! The `image` crate decodes JPEG with zune-jpeg, which differs from libjpeg-turbo in three
//! places: its IDCT is stb_image's (other constants and rounding than libjpeg's
//! `jpeg_idct_islow`), its chroma upsampling rounds the vertical and horizontal passes
//! separately (libjpeg's "fancy" h2v2 filter rounds once, with alternating +8/+7 bias), and
//! its YCbCr -> RGB uses other fixed-point coefficients. Each is a one-grey-level effect and
//! they add up, so network inputs differ from val.py's. This module reproduces libjpeg-turbo
//! instead:
//! - Huffman-coded baseline, extended (8-bit) and progressive JPEGs, restart intervals;
//! - `jpeg_idct_islow` (13-bit constants, 2 pass-1 bits, libjpeg's range-limit table);
//! - fancy upsampling for h2v1, h1v2 and h2v2 chroma, replication for other integer ratios;
//! - `ycc_rgb_convert` with libjpeg's 16-bit tables; grey images replicated to RGB.
//!
//! Anything else (arithmetic coding, 12-bit samples, CMYK, odd sampling ratios) is an
//! [`Unsupported`] error, so callers can fall back to another decoder.

use image::RgbImage;

/// The file uses a JPEG feature this decoder does not reproduce.
#[derive(Debug, thiserror::Error)]
#[error("unsupported JPEG: {0}")]
pub struct Unsupported(pub String);

const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

#[derive(Clone, Default)]
struct Huffman {
    /// (code length, symbol) for every 9-bit prefix whose code is at most 9 bits long.
    fast: Vec<(u8, u8)>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    vals: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], vals: Vec<u8>) -> Result<Self, String> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != vals.len() || total > 256 {
            return Err("bad Huffman table".into());
        }
        let mut h = Huffman {
            fast: vec![(0, 0); 512],
            vals,
            ..Default::default()
        };
        let mut code = 0i32;
        let mut k = 0i32;
        for len in 1..=16usize {
            let n = i32::from(counts[len - 1]);
            h.valptr[len] = k;
            h.mincode[len] = code;
            // the codes of this length must fit in `len` bits: checked before they are used
            if code + n > (1 << len) {
                return Err("bad Huffman table".into());
            }
            if n > 0 {
                for i in 0..n {
                    if len <= 9 {
                        let c = (code + i) as usize;
                        let shift = 9 - len;
                        for fill in 0..(1usize << shift) {
                            h.fast[(c << shift) | fill] = (len as u8, h.vals[(k + i) as usize]);
                        }
                    }
                }
                code += n;
                k += n;
                h.maxcode[len] = code - 1;
            } else {
                h.maxcode[len] = -1;
            }
            code <<= 1;
        }
        h.maxcode[17] = i32::MAX;
        Ok(h)
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    bits: u32,
    /// A marker was met: the entropy-coded segment ended, zeros are fed from now on.
    hit_marker: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            bits: 0,
            hit_marker: false,
        }
    }

    fn fill(&mut self) {
        while self.bits <= 56 {
            let mut byte = 0u8;
            if !self.hit_marker && self.pos < self.data.len() {
                byte = self.data[self.pos];
                if byte == 0xFF {
                    let next = self.data.get(self.pos + 1).copied().unwrap_or(0xD9);
                    if next == 0x00 {
                        self.pos += 2;
                    } else {
                        self.hit_marker = true;
                        byte = 0;
                    }
                } else {
                    self.pos += 1;
                }
            }
            self.acc |= u64::from(byte) << (56 - self.bits);
            self.bits += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.bits < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.bits -= n;
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    fn bit(&mut self) -> bool {
        self.bits(1) == 1
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, String> {
        let p = self.peek(16);
        let (len, sym) = h.fast[(p >> 7) as usize];
        if len > 0 {
            self.consume(u32::from(len));
            return Ok(sym);
        }
        for len in 10..=16usize {
            let code = (p >> (16 - len)) as i32;
            if code <= h.maxcode[len] {
                self.consume(len as u32);
                let idx = h.valptr[len] + code - h.mincode[len];
                return h
                    .vals
                    .get(idx as usize)
                    .copied()
                    .ok_or_else(|| "bad Huffman code".to_string());
            }
        }
        Err("bad Huffman code".into())
    }

    /// `HUFF_EXTEND(receive(s), s)`.
    fn receive_extend(&mut self, s: u8) -> i32 {
        if s == 0 {
            return 0;
        }
        let s = u32::from(s.min(16));
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// Skips to the restart marker expected after an interval and resets the reader.
    fn restart(&mut self) {
        self.acc = 0;
        self.bits = 0;
        self.hit_marker = false;
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return;
            }
            if self.data[self.pos] == 0xFF
                && self.data[self.pos + 1] != 0
                && self.data[self.pos + 1] != 0xFF
            {
                return; // another marker: leave it for the caller
            }
            self.pos += 1;
        }
    }

    /// Position of the next marker after the entropy-coded data.
    fn marker_pos(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            if self.data[p] == 0xFF
                && self.data[p + 1] != 0
                && !(0xD0..=0xD7).contains(&self.data[p + 1])
            {
                if self.data[p + 1] == 0xFF {
                    p += 1;
                    continue;
                }
                return p;
            }
            p += 1;
        }
        self.data.len()
    }
}

#[derive(Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Quantisation table latched when the component's first scan starts.
    quant: Option<[u16; 64]>,
    /// Blocks per row and rows of blocks in the (MCU-padded) coefficient buffer.
    bw: usize,
    bh: usize,
    /// Real samples: `ceil(W * h / hmax)` by `ceil(H * v / vmax)`.
    width: usize,
    height: usize,
    coefs: Vec<i16>,
    dc_pred: i32,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    comps: Vec<Component>,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
}

fn be16(d: &[u8], p: usize) -> Result<usize, String> {
    d.get(p..p + 2)
        .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
        .ok_or_else(|| "truncated marker".into())
}

/// Decodes a JPEG to RGB exactly as libjpeg-turbo's default settings would. A frame of more
/// than `max_pixels` pixels is refused before anything is allocated for it.
pub fn decode(data: &[u8], max_pixels: u64) -> anyhow::Result<RgbImage> {
    let decoder = Decoder {
        max_pixels,
        ..Decoder::default()
    };
    decoder.run(data).map_err(|e| match e {
        Error::Unsupported(s) => anyhow::Error::new(Unsupported(s)),
        Error::Corrupt(s) => anyhow::anyhow!("corrupt JPEG: {s}"),
    })
}

enum Error {
    Unsupported(String),
    Corrupt(String),
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Corrupt(s)
    }
}

#[derive(Default)]
struct Decoder {
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: usize,
    frame: Option<Frame>,
    jfif: bool,
    adobe_transform: Option<u8>,
    eobrun: u32,
    max_pixels: u64,
}

impl Decoder {
    fn run(mut self, d: &[u8]) -> Result<RgbImage, Error> {
        if d.len() < 4 || d[0] != 0xFF || d[1] != 0xD8 {
            return Err(Error::Corrupt("no SOI marker".into()));
        }
        let mut p = 2;
        loop {
            while p < d.len() && d[p] != 0xFF {
                p += 1;
            }
            while p < d.len() && d[p] == 0xFF {
                p += 1;
            }
            if p >= d.len() {
                break; // missing EOI: decode what we have, like libjpeg
            }
            let m = d[p];
            p += 1;
            match m {
                0xD9 => break,
                0xD0..=0xD7 | 0x01 => continue,
                _ => {}
            }
            let len = be16(d, p)?;
            if len < 2 || p + len > d.len() {
                return Err(Error::Corrupt(format!(
                    "marker 0xFF{m:02X} overruns the file"
                )));
            }
            let seg = &d[p + 2..p + len];
            match m {
                0xC0..=0xC2 => self.sof(seg, m == 0xC2)?,
                0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return Err(Error::Unsupported(format!(
                        "SOF marker 0xFF{m:02X} (lossless or arithmetic coding)"
                    )));
                }
                0xC4 => self.dht(seg)?,
                0xDB => self.dqt(seg)?,
                0xDD => self.restart_interval = be16(seg, 0)?,
                0xE0 => self.jfif |= seg.starts_with(b"JFIF\0"),
                0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => {
                    self.adobe_transform = Some(seg[11]);
                }
                0xDA => {
                    p = self.sos(d, p + 2, seg)?;
                    continue;
                }
                _ => {}
            }
            p += len;
        }
        self.output()
    }

    fn sof(&mut self, s: &[u8], progressive: bool) -> Result<(), Error> {
        if self.frame.is_some() {
            return Err(Error::Corrupt("two frames".into()));
        }
        if s.len() < 6 {
            return Err(Error::Corrupt("short SOF".into()));
        }
        if s[0] != 8 {
            return Err(Error::Unsupported(format!("{}-bit samples", s[0])));
        }
        let height = be16(s, 1)?;
        let width = be16(s, 3)?;
        let n = usize::from(s[5]);
        if width == 0 || height == 0 {
            return Err(Error::Unsupported(
                "height from DNL marker or zero size".into(),
            ));
        }
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(Error::Corrupt(format!(
                "{width}x{height} is {pixels} pixels, over the limit of {}",
                self.max_pixels
            )));
        }
        if n != 1 && n != 3 {
            return Err(Error::Unsupported(format!("{n} components")));
        }
        if s.len() < 6 + 3 * n {
            return Err(Error::Corrupt("short SOF".into()));
        }
        let mut comps = Vec::new();
        for i in 0..n {
            let c = &s[6 + 3 * i..9 + 3 * i];
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return Err(Error::Corrupt("bad component sampling".into()));
            }
            comps.push(Component {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                quant: None,
                bw: 0,
                bh: 0,
                width: 0,
                height: 0,
                coefs: Vec::new(),
                dc_pred: 0,
            });
        }
        let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
        let mcux = width.div_ceil(8 * hmax);
        let mcuy = height.div_ceil(8 * vmax);
        for c in &mut comps {
            c.width = (width * c.h).div_ceil(hmax);
            c.height = (height * c.v).div_ceil(vmax);
            c.bw = mcux * c.h;
            c.bh = mcuy * c.v;
            c.coefs = vec![0; c.bw * c.bh * 64];
        }
        self.frame = Some(Frame {
            width,
            height,
            progressive,
            comps,
            hmax,
            vmax,
            mcux,
            mcuy,
        });
        Ok(())
    }

    fn dht(&mut self, mut s: &[u8]) -> Result<(), Error> {
        while !s.is_empty() {
            if s.len() < 17 {
                return Err(Error::Corrupt("short DHT".into()));
            }
            let (class, id) = (s[0] >> 4, usize::from(s[0] & 15));
            let counts: [u8; 16] = s[1..17].try_into().expect("16 bytes");
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            if s.len() < 17 + n || id > 3 || class > 1 {
                return Err(Error::Corrupt("bad DHT".into()));
            }
            let h = Huffman::new(&counts, s[17..17 + n].to_vec())?;
            if class == 0 {
                self.dc[id] = Some(h);
            } else {
                self.ac[id] = Some(h);
            }
            s = &s[17 + n..];
        }
        Ok(())
    }

    fn dqt(&mut self, mut s: &[u8]) -> Result<(), Error> {
        while !s.is_empty() {
            let (prec, id) = (s[0] >> 4, usize::from(s[0] & 15));
            let size = if prec == 0 { 64 } else { 128 };
            if id > 3 || s.len() < 1 + size {
                return Err(Error::Corrupt("bad DQT".into()));
            }
            let mut t = [0u16; 64];
            for (k, &z) in ZIGZAG.iter().enumerate() {
                t[z] = if prec == 0 {
                    u16::from(s[1 + k])
                } else {
                    (u16::from(s[1 + 2 * k]) << 8) | u16::from(s[2 + 2 * k])
                };
            }
            self.qt[id] = Some(t);
            s = &s[1 + size..];
        }
        Ok(())
    }

    /// Decodes one scan; returns the position of the marker that follows it.
    fn sos(&mut self, d: &[u8], data_start: usize, s: &[u8]) -> Result<usize, Error> {
        let frame = self
            .frame
            .as_mut()
            .ok_or_else(|| "SOS before SOF".to_string())?;
        let ns = usize::from(*s.first().ok_or_else(|| "short SOS".to_string())?);
        if ns == 0 || ns > 4 || s.len() < 1 + 2 * ns + 3 {
            return Err(Error::Corrupt("bad SOS".into()));
        }
        let mut sel = Vec::new();
        for i in 0..ns {
            let (cid, t) = (s[1 + 2 * i], s[2 + 2 * i]);
            let ci = frame
                .comps
                .iter()
                .position(|c| c.id == cid)
                .ok_or_else(|| "scan names an unknown component".to_string())?;
            sel.push((ci, usize::from(t >> 4) & 3, usize::from(t & 15) & 3));
        }
        let (ss, se) = (usize::from(s[1 + 2 * ns]), usize::from(s[2 + 2 * ns]));
        let (ah, al) = (u32::from(s[3 + 2 * ns] >> 4), u32::from(s[3 + 2 * ns] & 15));
        if frame.progressive
            && (se > 63 || ss > se || (ss == 0 && se != 0) || (ss > 0 && ns != 1) || al > 13)
        {
            return Err(Error::Corrupt("bad progressive scan parameters".into()));
        }
        for &(ci, _, _) in &sel {
            let c = &mut frame.comps[ci];
            if c.quant.is_none() {
                c.quant =
                    Some(self.qt[c.tq].ok_or_else(|| "missing quantisation table".to_string())?);
            }
            c.dc_pred = 0;
        }
        let header_end = data_start + s.len();
        let mut br = BitReader::new(d, header_end);
        self.eobrun = 0;
        // units: one component => its real block grid, one block per unit, `scan_row` blocks
        // per row; several => MCUs, each component's h x v blocks per unit
        let scan_row = frame.comps[sel[0].0].width.div_ceil(8);
        let n_units = if ns == 1 {
            scan_row * frame.comps[sel[0].0].height.div_ceil(8)
        } else {
            frame.mcux * frame.mcuy
        };
        let mode = if !frame.progressive {
            Mode::Baseline
        } else if ss == 0 {
            if ah == 0 {
                Mode::DcFirst
            } else {
                Mode::DcRefine
            }
        } else if ah == 0 {
            Mode::AcFirst
        } else {
            Mode::AcRefine
        };
        let tables = (&self.dc, &self.ac);
        // (component, DC table, AC table, coefficient offset) of each block of the current unit
        let mut blocks: Vec<(usize, usize, usize, usize)> = Vec::new();
        for u in 0..n_units {
            if self.restart_interval > 0 && u > 0 && u % self.restart_interval == 0 {
                br.restart();
                self.eobrun = 0;
                for &(ci, _, _) in &sel {
                    frame.comps[ci].dc_pred = 0;
                }
            }
            blocks.clear();
            if ns == 1 {
                let (ci, td, ta) = sel[0];
                let bw = frame.comps[ci].bw;
                blocks.push((ci, td, ta, ((u / scan_row) * bw + u % scan_row) * 64));
            } else {
                let (mx, my) = (u % frame.mcux, u / frame.mcux);
                for &(ci, td, ta) in &sel {
                    let c = &frame.comps[ci];
                    for yy in 0..c.v {
                        for xx in 0..c.h {
                            let (bx, by) = (mx * c.h + xx, my * c.v + yy);
                            blocks.push((ci, td, ta, (by * c.bw + bx) * 64));
                        }
                    }
                }
            }
            for &(ci, td, ta, off) in &blocks {
                let c = &mut frame.comps[ci];
                decode_block(
                    &mut br,
                    mode,
                    tables,
                    td,
                    ta,
                    ss,
                    se,
                    al,
                    &mut c.dc_pred,
                    &mut c.coefs[off..off + 64],
                    &mut self.eobrun,
                )?;
            }
        }
        Ok(br.marker_pos())
    }

    fn output(self) -> Result<RgbImage, Error> {
        let frame = self.frame.ok_or_else(|| "no frame".to_string())?;
        let (w, h) = (frame.width, frame.height);
        let mut planes: Vec<Vec<u8>> = Vec::new();
        for c in &frame.comps {
            let quant = c
                .quant
                .ok_or_else(|| "component never scanned".to_string())?;
            let stride = c.bw * 8;
            let mut plane = vec![0u8; stride * c.bh * 8];
            for by in 0..c.bh {
                for bx in 0..c.bw {
                    let off = (by * c.bw + bx) * 64;
                    idct_islow(
                        &c.coefs[off..off + 64],
                        &quant,
                        &mut plane[by * 8 * stride + bx * 8..],
                        stride,
                    );
                }
            }
            planes.push(upsample(&plane, stride, c, frame.hmax, frame.vmax, w, h)?);
        }
        let mut out = vec![0u8; w * h * 3];
        if planes.len() == 1 {
            for (i, &y) in planes[0].iter().enumerate() {
                out[3 * i..3 * i + 3].fill(y);
            }
        } else {
            let ids: Vec<u8> = frame.comps.iter().map(|c| c.id).collect();
            let rgb = if self.jfif {
                false
            } else if let Some(t) = self.adobe_transform {
                t == 0
            } else {
                ids == [82, 71, 66]
            };
            let t = YccTables::new();
            for i in 0..w * h {
                let (a, b, c) = (planes[0][i], planes[1][i], planes[2][i]);
                let px = if rgb { [a, b, c] } else { t.convert(a, b, c) };
                out[3 * i..3 * i + 3].copy_from_slice(&px);
            }
        }
        RgbImage::from_raw(w as u32, h as u32, out)
            .ok_or_else(|| Error::Corrupt("image too large".into()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Baseline,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

fn table(t: &Option<Huffman>) -> Result<&Huffman, String> {
    t.as_ref()
        .ok_or_else(|| "missing Huffman table".to_string())
}

#[allow(clippy::too_many_arguments)]
fn decode_block(
    br: &mut BitReader<'_>,
    mode: Mode,
    (dc, ac): (&[Option<Huffman>; 4], &[Option<Huffman>; 4]),
    td: usize,
    ta: usize,
    ss: usize,
    se: usize,
    al: u32,
    pred: &mut i32,
    blk: &mut [i16],
    eobrun: &mut u32,
) -> Result<(), String> {
    match mode {
        Mode::Baseline | Mode::DcFirst => {
            let s = br.decode(table(&dc[td])?)?;
            *pred = pred.wrapping_add(br.receive_extend(s));
            blk[0] = (*pred << al) as i16;
            if mode == Mode::Baseline {
                let ac = table(&ac[ta])?;
                let mut k = 1;
                while k < 64 {
                    let rs = br.decode(ac)?;
                    let (r, s) = (usize::from(rs >> 4), rs & 15);
                    if s != 0 {
                        k += r;
                        if k > 63 {
                            return Err("AC coefficient index past 63".into());
                        }
                        blk[ZIGZAG[k]] = br.receive_extend(s) as i16;
                        k += 1;
                    } else if r == 15 {
                        k += 16;
                    } else {
                        break;
                    }
                }
            }
        }
        Mode::DcRefine => {
            if br.bit() {
                blk[0] |= (1 << al) as i16;
            }
        }
        Mode::AcFirst => {
            if *eobrun > 0 {
                *eobrun -= 1;
                return Ok(());
            }
            let ac = table(&ac[ta])?;
            let mut k = ss;
            while k <= se {
                let rs = br.decode(ac)?;
                let (r, s) = (usize::from(rs >> 4), rs & 15);
                if s != 0 {
                    k += r;
                    if k > 63 {
                        return Err("AC coefficient index past 63".into());
                    }
                    blk[ZIGZAG[k]] = (br.receive_extend(s) << al) as i16;
                    k += 1;
                } else if r == 15 {
                    k += 16;
                } else {
                    *eobrun = 1 << r;
                    if r > 0 {
                        *eobrun += br.bits(r as u32);
                    }
                    *eobrun -= 1;
                    break;
                }
            }
        }
        Mode::AcRefine => {
            let p1: i16 = 1 << al;
            let m1: i16 = (-1i32 << al) as i16;
            let refine = |br: &mut BitReader<'_>, c: &mut i16| {
                if br.bit() && (*c & p1) == 0 {
                    *c = if *c >= 0 {
                        c.wrapping_add(p1)
                    } else {
                        c.wrapping_add(m1)
                    };
                }
            };
            let mut k = ss;
            if *eobrun == 0 {
                let ac = table(&ac[ta])?;
                while k <= se {
                    let rs = br.decode(ac)?;
                    let mut r = i32::from(rs >> 4);
                    let s = rs & 15;
                    let mut val = 0i16;
                    if s != 0 {
                        val = if br.bit() { p1 } else { m1 };
                    } else if r != 15 {
                        *eobrun = 1 << r;
                        if r > 0 {
                            *eobrun += br.bits(r as u32);
                        }
                        break;
                    }
                    while k <= se {
                        let z = ZIGZAG[k];
                        if blk[z] != 0 {
                            refine(br, &mut blk[z]);
                        } else {
                            r -= 1;
                            if r < 0 {
                                break;
                            }
                        }
                        k += 1;
                    }
                    if s != 0 {
                        if k > 63 {
                            return Err("AC coefficient index past 63".into());
                        }
                        blk[ZIGZAG[k]] = val;
                    }
                    k += 1;
                }
            }
            if *eobrun > 0 {
                while k <= se {
                    let z = ZIGZAG[k];
                    if blk[z] != 0 {
                        refine(br, &mut blk[z]);
                    }
                    k += 1;
                }
                *eobrun -= 1;
            }
        }
    }
    Ok(())
}

/// libjpeg's post-IDCT range limit: `x` centred on 0, masked to 10 bits.
fn range_limit(x: i32) -> u8 {
    let idx = x & 1023;
    match idx {
        0..=127 => (idx + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (idx - 896) as u8,
    }
}

/// libjpeg `jpeg_idct_islow` on one dequantised block, writing 8x8 samples.
fn idct_islow(coef: &[i16], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    const CB: i32 = 13;
    const P1: i32 = 2;
    const F0298: i64 = 2446;
    const F0390: i64 = 3196;
    const F0541: i64 = 4433;
    const F0765: i64 = 6270;
    const F0899: i64 = 7373;
    const F1175: i64 = 9633;
    const F1501: i64 = 12299;
    const F1847: i64 = 15137;
    const F1961: i64 = 16069;
    const F2053: i64 = 16819;
    const F2562: i64 = 20995;
    const F3072: i64 = 25172;
    let descale = |x: i64, n: i32| (x + (1i64 << (n - 1))) >> n;
    // even/odd butterflies shared by both passes; returns the 8 outputs before descaling
    let core = |v: [i64; 8], dc_shift: i32| -> [i64; 8] {
        let z1 = (v[2] + v[6]) * F0541;
        let tmp2 = z1 + v[6] * -F1847;
        let tmp3 = z1 + v[2] * F0765;
        let tmp0 = (v[0] + v[4]) << dc_shift;
        let tmp1 = (v[0] - v[4]) << dc_shift;
        let (t10, t13, t11, t12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
        let (mut o0, mut o1, mut o2, mut o3) = (v[7], v[5], v[3], v[1]);
        let z1 = o0 + o3;
        let z2 = o1 + o2;
        let z3 = o0 + o2;
        let z4 = o1 + o3;
        let z5 = (z3 + z4) * F1175;
        o0 *= F0298;
        o1 *= F2053;
        o2 *= F3072;
        o3 *= F1501;
        let z1 = z1 * -F0899;
        let z2 = z2 * -F2562;
        let z3 = z3 * -F1961 + z5;
        let z4 = z4 * -F0390 + z5;
        o0 += z1 + z3;
        o1 += z2 + z4;
        o2 += z2 + z3;
        o3 += z1 + z4;
        [
            t10 + o3,
            t11 + o2,
            t12 + o1,
            t13 + o0,
            t13 - o0,
            t12 - o1,
            t11 - o2,
            t10 - o3,
        ]
    };
    let mut ws = [0i64; 64];
    for col in 0..8 {
        let v: [i64; 8] =
            std::array::from_fn(|r| i64::from(coef[r * 8 + col]) * i64::from(quant[r * 8 + col]));
        if v[1..].iter().all(|&x| x == 0) {
            for r in 0..8 {
                ws[r * 8 + col] = v[0] << P1;
            }
            continue;
        }
        let o = core(v, CB);
        for r in 0..8 {
            ws[r * 8 + col] = descale(o[r], CB - P1);
        }
    }
    for row in 0..8 {
        let v: [i64; 8] = ws[row * 8..row * 8 + 8].try_into().expect("8 values");
        let dst = &mut out[row * stride..row * stride + 8];
        if v[1..].iter().all(|&x| x == 0) {
            dst.fill(range_limit(descale(v[0], P1 + 3) as i32));
            continue;
        }
        let o = core(v, CB);
        for (d, x) in dst.iter_mut().zip(o) {
            *d = range_limit(descale(x, CB + P1 + 3) as i32);
        }
    }
}

/// A component plane upsampled to the full `w x h` image like libjpeg-turbo's defaults.
fn upsample(
    plane: &[u8],
    stride: usize,
    c: &Component,
    hmax: usize,
    vmax: usize,
    w: usize,
    h: usize,
) -> Result<Vec<u8>, Error> {
    let (cw, ch) = (c.width, c.height);
    let at = |x: usize, y: usize| i32::from(plane[y * stride + x]);
    let mut out = vec![0u8; w * h];
    let (hr, vr) = (hmax / c.h, vmax / c.v);
    if !hmax.is_multiple_of(c.h) || !vmax.is_multiple_of(c.v) {
        return Err(Error::Unsupported(
            "non-integral chroma sampling ratio".into(),
        ));
    }
    match (hr, vr) {
        (1, 1) => {
            for y in 0..h {
                out[y * w..(y + 1) * w].copy_from_slice(&plane[y * stride..y * stride + w]);
            }
        }
        (2, 1) if cw > 2 => {
            for y in 0..h {
                let row = h2v1_row(|x| at(x, y), cw);
                out[y * w..(y + 1) * w].copy_from_slice(&row[..w]);
            }
        }
        (1, 2) => {
            for y in 0..h {
                let (sy, below) = (y / 2, y % 2 == 1);
                let other = if below {
                    (sy + 1).min(ch - 1)
                } else {
                    sy.saturating_sub(1)
                };
                let bias = if below { 2 } else { 1 };
                for x in 0..w {
                    out[y * w + x] = ((3 * at(x, sy) + at(x, other) + bias) >> 2) as u8;
                }
            }
        }
        (2, 2) if cw > 2 => {
            for y in 0..h {
                let (sy, below) = (y / 2, y % 2 == 1);
                let other = if below {
                    (sy + 1).min(ch - 1)
                } else {
                    sy.saturating_sub(1)
                };
                let sum = |x: usize| 3 * at(x, sy) + at(x, other);
                let dst = &mut out[y * w..(y + 1) * w];
                let mut put = |x: usize, v: i32| {
                    if x < w {
                        dst[x] = (v >> 4) as u8;
                    }
                };
                put(0, sum(0) * 4 + 8);
                put(1, sum(0) * 3 + sum(1) + 7);
                for sx in 1..cw - 1 {
                    put(2 * sx, sum(sx) * 3 + sum(sx - 1) + 8);
                    put(2 * sx + 1, sum(sx) * 3 + sum(sx + 1) + 7);
                }
                put(2 * (cw - 1), sum(cw - 1) * 3 + sum(cw - 2) + 8);
                put(2 * (cw - 1) + 1, sum(cw - 1) * 4 + 7);
            }
        }
        _ => {
            // box replication (libjpeg's h2v1/h2v2/int upsamplers without fancy filtering)
            for y in 0..h {
                for x in 0..w {
                    out[y * w + x] = plane[(y / vr) * stride + x / hr];
                }
            }
        }
    }
    Ok(out)
}

/// libjpeg `h2v1_fancy_upsample` of one row of `cw` samples.
fn h2v1_row(at: impl Fn(usize) -> i32, cw: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(2 * cw);
    row.push(at(0) as u8);
    row.push(((at(0) * 3 + at(1) + 2) >> 2) as u8);
    for x in 1..cw - 1 {
        let v = at(x) * 3;
        row.push(((v + at(x - 1) + 1) >> 2) as u8);
        row.push(((v + at(x + 1) + 2) >> 2) as u8);
    }
    row.push(((at(cw - 1) * 3 + at(cw - 2) + 1) >> 2) as u8);
    row.push(at(cw - 1) as u8);
    row
}

/// libjpeg's YCbCr -> RGB tables (`build_ycc_rgb_table`, 16 fraction bits).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> Self {
        const SB: i32 = 16;
        let fix = |x: f64| (x * f64::from(1 << SB) + 0.5) as i32;
        let half = 1 << (SB - 1);
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + half) >> SB;
            t.cb_b[i] = (fix(1.77200) * x + half) >> SB;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + half;
        }
        t
    }

    fn convert(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> 16)),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_only_block_is_flat() {
        let mut coef = [0i16; 64];
        coef[0] = 16; // 16 * q1 = 16 -> (16 << 2 + 16) >> 5 = 2 -> 130
        let mut out = [0u8; 64];
        idct_islow(&coef, &[1; 64], &mut out, 8);
        assert!(out.iter().all(|&v| v == 130), "{out:?}");
    }

    #[test]
    fn range_limit_matches_libjpeg_table() {
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(300), 255);
        assert_eq!(range_limit(-300), 0);
    }

    #[test]
    fn ycc_neutral_grey_is_grey() {
        assert_eq!(YccTables::new().convert(77, 128, 128), [77, 77, 77]);
    }
}
