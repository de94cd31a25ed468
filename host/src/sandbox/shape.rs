//! What a component declares, read from its bytes before anything is compiled: how many linear
//! memories and tables its core modules define, and how large its code and its largest function
//! are. A component the host would refuse to run, or could not compile within its budget, is
//! refused here with the number that was too large, in milliseconds and without compiling.

use crate::runtime::limits::{MAX_MEMORIES, MAX_TABLES};

/// The largest function body the host compiles. Compile time grows with the size of a function
/// and, for branchy code, faster than it (Cranelift here: 1.4 s for 256 KiB of nested `if`s,
/// 6.7 s for 1 MiB); a plugin's functions are small, the largest of the built-in plugins 31 KiB.
pub const MAX_FUNCTION_BYTES: usize = 256 << 10;

/// The most code the host compiles for one plugin, all functions together: twenty times the
/// largest built-in plugin (200 KiB). With [`MAX_FUNCTION_BYTES`] it bounds a compile's time
/// (tens of seconds of CPU at worst, spread over the cores) and memory (Cranelift's per
/// function, times the threads compiling).
pub const MAX_CODE_BYTES: usize = 4 << 20;

/// What the core modules of a component define.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Linear memories defined (imported ones are another module's).
    pub memories: usize,
    /// Tables defined.
    pub tables: usize,
    /// Function bodies.
    pub functions: usize,
    /// Bytes of code, all bodies together.
    pub code_bytes: usize,
    /// Bytes of the largest body.
    pub largest_function: usize,
}

impl Shape {
    /// Reads the shape of the component in `bytes`, nested modules and components included.
    pub fn read(bytes: &[u8]) -> Result<Shape, String> {
        use wasmparser::Payload;
        let mut shape = Shape::default();
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload.map_err(|e| format!("not a valid WebAssembly component: {e}"))? {
                Payload::MemorySection(r) => shape.memories += r.count() as usize,
                Payload::TableSection(r) => shape.tables += r.count() as usize,
                Payload::CodeSectionEntry(body) => {
                    let len = body.range().len();
                    shape.functions += 1;
                    shape.code_bytes += len;
                    shape.largest_function = shape.largest_function.max(len);
                }
                _ => {}
            }
        }
        Ok(shape)
    }

    /// Refuses what the host will not run: more memories or tables than an instance may have,
    /// a function too large to compile within budget.
    pub fn check(&self) -> Result<(), String> {
        if self.memories > MAX_MEMORIES {
            return Err(format!(
                "defines {} linear memories; the host allows {MAX_MEMORIES} (the memory limit \
                 holds for all of a plugin's memories together)",
                self.memories
            ));
        }
        if self.tables > MAX_TABLES {
            return Err(format!(
                "defines {} tables; the host allows {MAX_TABLES}",
                self.tables
            ));
        }
        if self.code_bytes > MAX_CODE_BYTES {
            return Err(format!(
                "has {} bytes of code; the host compiles at most {MAX_CODE_BYTES} bytes per plugin",
                self.code_bytes
            ));
        }
        if self.largest_function > MAX_FUNCTION_BYTES {
            return Err(format!(
                "has a function of {} bytes; the host compiles functions of up to \
                 {MAX_FUNCTION_BYTES} bytes (split it)",
                self.largest_function
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with `memories` memories and one function whose body has `body` bytes.
    fn module(memories: u32, body: usize) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let section = |m: &mut Vec<u8>, id: u8, content: &[u8]| {
            m.push(id);
            leb(m, content.len());
            m.extend_from_slice(content);
        };
        section(&mut m, 1, &[1, 0x60, 0, 0]); // one type: [] -> []
        section(&mut m, 3, &[1, 0]); // one function of that type
        let mut mems = Vec::new();
        leb(&mut mems, memories as usize);
        for _ in 0..memories {
            mems.extend_from_slice(&[0, 1]); // min 1 page, no max
        }
        section(&mut m, 5, &mems);
        // The body: no locals, `nop`s, `end`.
        let mut code = vec![1];
        let mut f = vec![0];
        f.resize(body - 1, 0x01);
        f.push(0x0b);
        leb(&mut code, f.len());
        code.extend_from_slice(&f);
        section(&mut m, 10, &code);
        m
    }

    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn counts_memories_and_measures_functions() {
        let shape = Shape::read(&module(1, 100)).unwrap();
        assert_eq!(
            shape,
            Shape {
                memories: 1,
                tables: 0,
                functions: 1,
                code_bytes: 100,
                largest_function: 100,
            }
        );
        assert!(shape.check().is_ok());
    }

    #[test]
    fn refuses_extra_memories_and_huge_functions_by_number() {
        let many = Shape::read(&module(16, 10)).unwrap();
        let err = many.check().unwrap_err();
        assert!(err.contains("defines 16 linear memories"), "{err}");
        let huge = Shape::read(&module(1, MAX_FUNCTION_BYTES + 1)).unwrap();
        let err = huge.check().unwrap_err();
        assert!(
            err.contains(&format!("{} bytes", MAX_FUNCTION_BYTES + 1)),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Shape::read(b"\0asm\x01\0\0\0\x05\xff").is_err());
    }
}
