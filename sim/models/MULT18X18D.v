// Simulation model of the ECP5 sysDSP 18x18 multiplier (MULT18X18D) for the subset of its
// configuration that hw/dsp.py instantiates: A, B and P each either combinational ("NONE") or
// registered on CLK0 with clock enable CE0 and synchronous reset RST0; the optional pipeline
// register likewise; SIGNEDA / SIGNEDB select two's-complement or unsigned operands. Written from
// the register description in Lattice's ECP5 sysDSP usage guide (yosys ships only a black box);
// anything else this model does not cover stops the simulation at time 0.
module MULT18X18D(
    input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34,
    output P35
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    localparam IN_A = REG_INPUTA_CLK == "CLK0";
    localparam IN_B = REG_INPUTB_CLK == "CLK0";
    localparam PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam OUT = REG_OUTPUT_CLK == "CLK0";

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && !IN_A) || (REG_INPUTB_CLK != "NONE" && !IN_B)
                || (REG_PIPELINE_CLK != "NONE" && !PIPE) || (REG_OUTPUT_CLK != "NONE" && !OUT)
                || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0"
                || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0"
                || REG_PIPELINE_RST != "RST0" || REG_OUTPUT_RST != "RST0"
                || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED") begin
            $display("MULT18X18D model: configuration not covered");
            $finish;
        end
    end

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_q = 0, b_q = 0;
    reg sa_q = 0, sb_q = 0;
    always @(posedge CLK0) if (RST0) begin
        a_q <= 0; b_q <= 0; sa_q <= 0; sb_q <= 0;
    end else if (CE0) begin
        a_q <= a; b_q <= b; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
    end
    wire [17:0] a_m = IN_A ? a_q : a;
    wire [17:0] b_m = IN_B ? b_q : b;
    wire sa = IN_A ? sa_q : SIGNEDA;
    wire sb = IN_B ? sb_q : SIGNEDB;
    // each operand extended to 36 bits as its sign control says; the low 36 bits of the product
    wire [35:0] a_x = {{18{sa & a_m[17]}}, a_m};
    wire [35:0] b_x = {{18{sb & b_m[17]}}, b_m};
    wire [35:0] prod = a_x * b_x;
    reg [35:0] pipe_q = 0, out_q = 0;
    always @(posedge CLK0) if (RST0) pipe_q <= 0; else if (CE0) pipe_q <= prod;
    wire [35:0] pipe = PIPE ? pipe_q : prod;
    always @(posedge CLK0) if (RST0) out_q <= 0; else if (CE0) out_q <= pipe;
    wire [35:0] p = OUT ? out_q : pipe;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19,
            P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1,
            P0} = p;
endmodule
